"""The eval, export and query commands on a real dataset and checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from bigkg.config import config_to_dict
from bigkg.evaluation import evaluate
from bigkg.evaluation.query import answer_file
from bigkg.evaluation.scoring import score_triples
from bigkg.evaluation.source import open_run
from launcher.cli import main
from bigkg.format import load_manifest
from eval_datasets import write_trained_run


@pytest.fixture()
def run(tmp_path):
    config, model, splits, by_index = write_trained_run(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    return path, config, model, splits, by_index


def test_eval_command_prints_table_and_writes_json(run, tmp_path, capsys):
    path, config, *_ = run
    out = tmp_path / "metrics.json"
    assert main(["eval", str(path), "--split", "valid", "--json", str(out), "--set", "eval.query_batch=3"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10", "amr", "amri", "amrri", "count", "unseen_entity_triples"):
        assert key in data
    for side in ("tails", "heads"):
        assert {"amr", "amri", "amrri"} <= set(data[side])
    assert data["split"] == "valid"
    assert data["mrr"] == pytest.approx(evaluate(config, "valid")["mrr"])
    assert f"{data['mrr']:.4f}" in printed and "tails" in printed and "heads" in printed
    assert "AMRI" in printed and f"{data['heads']['amri']:.4f}" in printed


def test_eval_command_bad_override_is_one_line_error(run, capsys):
    path, *_ = run
    assert main(["eval", str(path), "--set", "eval.mode=everything"]) == 2
    err = capsys.readouterr().err
    assert "eval.mode" in err and "Traceback" not in err


def test_export_command_parquet(run, tmp_path, capsys):
    path, config, model, splits, by_index = run
    out = tmp_path / "emb.parquet"
    assert main(["export", str(path), "--format", "parquet", "--out", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == sum(len(v) for v in by_index.values())
    for r in rows:
        k = int(r["name"][len(r["entity_type"]):])
        assert torch.equal(torch.tensor(r["embedding"]), by_index[r["entity_type"]][k])
    assert main(["export", str(path), "--format", "parquet", "--out", str(out)]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err


def test_export_command_writes_both_outputs_or_neither(run, tmp_path, capsys):
    path, *_ = run
    emb, blocker = tmp_path / "emb.parquet", tmp_path / "a-file"
    blocker.write_text("")
    # The relations cannot be written (a file is in the way of their directory): no embeddings either.
    assert main(["export", str(path), "--out", str(emb), "--relations", str(blocker / "rel.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'rel.parquet'}" in err and "Traceback" not in err
    # The same file for both: the relations would overwrite the embeddings.
    assert main(["export", str(path), "--out", str(emb), "--relations", str(emb), "--force"]) == 2
    assert "--out and --relations both name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a-file", "config.yaml", "data", "run"])


def complex_score(anchor: torch.Tensor, real: torch.Tensor, imag: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """ComplEx with the dot comparator, Re(<anchor, w, conj(candidate)>), written out from the exported halves."""
    ar, ai = anchor.chunk(2, dim=-1)
    cr, ci = candidates.chunk(2, dim=-1)
    return (ar * real - ai * imag) @ cr.T + (ar * imag + ai * real) @ ci.T


def test_export_command_relations_let_scores_be_computed_outside_bigkg(tmp_path, capsys):
    config, model, _, by_index = write_trained_run(tmp_path, overrides=["model.reciprocal=true", "model.dim=6"],
                                                   operator="complex_diagonal")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    emb, rel = tmp_path / "emb.parquet", tmp_path / "rel.parquet"
    assert main(["export", str(path), "--out", str(emb), "--relations", str(rel)]) == 0
    table = pq.read_table(rel)
    assert json.loads(table.schema.metadata[b"bigkg.model"])["comparator"] == "dot"
    params = {(r["relation"], r["reciprocal"], r["parameter"]): torch.tensor(r["values"]) for r in table.to_pylist()}
    relations = [r.name for r in load_manifest(config.dataset).relations]
    assert len(params) == len(relations) * 2 * 2  # each relation and its twin: real and imag
    vectors = {r["name"]: torch.tensor(r["embedding"]) for r in pq.read_table(emb).to_pylist()}
    heads = torch.stack([vectors[n] for n in sorted(vectors) if n.startswith("user")])
    tails = torch.stack([vectors[n] for n in sorted(vectors) if n.startswith("item")])
    for r, name in enumerate(relations):
        forward = complex_score(heads, params[(name, False, "real")], params[(name, False, "imag")], tails)
        backward = complex_score(tails, params[(name, True, "real")], params[(name, True, "imag")], heads)
        with torch.no_grad():
            torch.testing.assert_close(forward, model.score_candidates("rhs", heads, torch.full((len(heads),), r), tails))
            torch.testing.assert_close(backward, model.score_candidates("lhs", tails, torch.full((len(tails),), r), heads))
    emb.unlink()
    assert main(["export", str(path), "--out", str(emb), "--relations", str(rel)]) == 2  # rel exists, no --force
    assert "rel.parquet already exists" in capsys.readouterr().err and not emb.exists()


def test_query_similar_ranks_the_entities_of_its_type_by_cosine_without_itself(run, tmp_path, capsys):
    path, config, model, splits, by_index = run
    out = tmp_path / "similar.json"
    assert main(["query", str(path), "--similar", "item7", "-k", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    items = by_index["item"]
    cosine = torch.nn.functional.cosine_similarity(items[7:8], items)
    cosine[7] = float("-inf")
    best = torch.topk(cosine, 5)
    assert result["entity_type"] == "item"
    assert [n["name"] for n in result["neighbours"]] == [f"item{k}" for k in best.indices.tolist()]
    assert [n["similarity"] for n in result["neighbours"]] == pytest.approx(best.values.tolist(), abs=1e-5)
    printed = capsys.readouterr().out
    assert f"item{best.indices[0].item()}" in printed.splitlines()[1]
    assert main(["query", str(path), "--similar", "item7", "--entity-type", "user"]) == 2
    assert "no entity named 'item7' of type 'user'" in capsys.readouterr().err
    assert main(["query", str(path), "--head", "user3"]) == 2
    assert "need --relation" in capsys.readouterr().err


def test_query_similar_leaves_a_bias_coordinate_out(tmp_path):
    """With model.bias coordinate 0 is a popularity term: the cosine is of the other coordinates."""
    config, model, splits, by_index = write_trained_run(tmp_path, ["model.bias=true"])
    path, out = tmp_path / "config.yaml", tmp_path / "similar.json"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert main(["query", str(path), "--similar", "item7", "-k", "5", "--json", str(out)]) == 0
    items = by_index["item"][:, 1:]
    cosine = torch.nn.functional.cosine_similarity(items[7:8], items)
    cosine[7] = float("-inf")
    best = torch.topk(cosine, 5)
    neighbours = json.loads(out.read_text())["neighbours"]
    assert [n["name"] for n in neighbours] == [f"item{k}" for k in best.indices.tolist()]
    assert [n["similarity"] for n in neighbours] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_query_command_top_tails_and_heads(run, tmp_path, capsys):
    path, config, model, splits, by_index = run
    out = tmp_path / "answers.json"
    assert main(["query", str(path), "--head", "user3", "--relation", "likes", "-k", "4", "--json", str(out)]) == 0
    answers = json.loads(out.read_text())["answers"]
    with torch.no_grad():
        scores = model.score_candidates("rhs", by_index["user"][[3]], torch.tensor([0]), by_index["item"])[0]
    expected = [f"item{i}" for i in torch.argsort(scores, descending=True)[:4].tolist()]
    assert [a["name"] for a in answers] == expected
    known = {f"item{t}" for s in splits.values() for h, r, t in s.tolist() if h == 3 and r == 0}
    assert all(a["known"] == (a["name"] in known) for a in answers)
    capsys.readouterr()
    assert main(["query", str(path), "--tail", "item5", "--relation", "likes", "-k", "20", "--exclude-known"]) == 0
    printed = capsys.readouterr().out
    known_heads = {h for s in splits.values() for h, r, t in s.tolist() if t == 5 and r == 0}
    assert printed.count("user") == 12 - len(known_heads)
    assert main(["query", str(path), "--head", "nobody", "--relation", "likes"]) == 2
    assert "nobody" in capsys.readouterr().err


def test_query_command_answers_a_file_of_heads_into_parquet_as_single_queries_do(run, tmp_path, capsys):
    path, config, model, splits, by_index = run
    heads = ["user3", "user0", "user11", "user3", "user7"]
    (tmp_path / "heads.txt").write_text("\n".join(heads) + "\n")
    out = tmp_path / "answers.parquet"
    args = ["query", str(path), "--heads", str(tmp_path / "heads.txt"), "--relation", "likes", "-k", "4", "--exclude-known"]
    assert main([*args, "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.schema.names == ["anchor", "rank", "answer", "score", "known"]
    rows = table.to_pylist()
    known = {(h, t) for s in splits.values() for h, r, t in s.tolist() if r == 0}
    for head in set(heads):
        h = int(head[len("user"):])
        with torch.no_grad():
            scores = model.score_candidates("rhs", by_index["user"][[h]], torch.tensor([0]), by_index["item"])[0]
        ranked = [f"item{i}" for i in torch.argsort(scores, descending=True).tolist() if (h, i) not in known][:4]
        mine = [r for r in rows if r["anchor"] == head]
        assert [r["answer"] for r in mine] == ranked * heads.count(head)  # a repeated anchor is answered again
        assert [r["rank"] for r in mine] == [1, 2, 3, 4] * heads.count(head) and not any(r["known"] for r in mine)
    # batches of two anchors give the same table
    trained = open_run(config)
    answer_file(trained, "likes", "rhs", tmp_path / "heads.txt", 4, tmp_path / "batched.parquet", exclude_known=True, batch=2)
    batched = pq.read_table(tmp_path / "batched.parquet").to_pylist()
    assert [{**r, "score": None} for r in batched] == [{**r, "score": None} for r in rows]
    assert [r["score"] for r in batched] == pytest.approx([r["score"] for r in rows], rel=1e-6)  # other matmul shapes

    (tmp_path / "bad.txt").write_text("user1\nuser2\nnobody\n")
    bad_out = tmp_path / "bad.parquet"
    assert main(["query", str(path), "--heads", str(tmp_path / "bad.txt"), "--relation", "likes", "--out", str(bad_out)]) == 2
    assert "bad.txt, line 3: no entity named 'nobody'" in capsys.readouterr().err and not bad_out.exists()
    assert main(args) == 2
    assert "give --out PATH" in capsys.readouterr().err
    before = out.read_bytes()  # an existing output is replaced only with --force
    assert main([*args, "--out", str(out), "-k", "2"]) == 2
    assert "already exists (use --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*args, "--out", str(out), "-k", "2", "--force"]) == 0 and pq.read_table(out).num_rows == 2 * len(heads)


def test_query_command_bad_k_and_anchors_that_are_not_utf8_name_the_value_and_line(run, tmp_path, capsys):
    path, *_ = run
    assert main(["query", str(path), "--head", "user3", "--relation", "likes", "-k", "-5"]) == 2
    err = capsys.readouterr().err
    assert "-k must be at least 1, got -5" in err and "Traceback" not in err
    heads = tmp_path / "heads.txt"
    heads.write_bytes(b"user3\nuser\xff1\n")
    out = tmp_path / "answers.parquet"
    assert main(["query", str(path), "--heads", str(heads), "--relation", "likes", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{heads}, line 2: not valid UTF-8 text" in err and "Traceback" not in err
    assert not list(tmp_path.glob("answers.parquet*"))


def test_query_command_scores_a_file_of_triples_of_mixed_relations(run, tmp_path, capsys):
    """Each line's score is the model's tail-prediction score of its triple, whatever its
    relation and entity types; known marks triples of the dataset; batches change nothing."""
    path, config, model, splits, by_index = run
    names = {"likes": ("user", "item"), "similar": ("item", "item"), "follows": ("user", "user")}
    rels = list(names)
    known = {tuple(t) for s in splits.values() for t in s.tolist()}
    lines = [(3, 0, 5), (0, 1, 7), (11, 2, 4), (3, 0, 5)] + [tuple(t) for t in splits["test"][:3].tolist()]
    triples = tmp_path / "triples.tsv"
    triples.write_text("".join(f"{names[rels[r]][0]}{h}\t{rels[r]}\t{names[rels[r]][1]}{t}\n" for h, r, t in lines))
    out = tmp_path / "scores.parquet"
    assert main(["query", str(path), "--triples", str(triples), "--out", str(out)]) == 0
    assert f"wrote the scores of {len(lines)} triples" in capsys.readouterr().out
    rows = pq.read_table(out).to_pylist()
    assert [(r["head"], r["relation"], r["tail"]) for r in rows] == [tuple(line.split("\t")) for line in
                                                                      triples.read_text().splitlines()]
    with torch.no_grad():
        expected = [model.score_candidates("rhs", by_index[names[rels[r]][0]][[h]], torch.tensor([r]),
                                           by_index[names[rels[r]][1]][[t]])[0, 0].item() for h, r, t in lines]
    assert [r["score"] for r in rows] == pytest.approx(expected, rel=1e-5)
    assert [r["known"] for r in rows] == [line in known for line in lines] and any(r["known"] for r in rows)
    batched = list(score_triples(open_run(config), [(r["head"], r["relation"], r["tail"]) for r in rows], batch=3))
    assert [len(b.heads) for b in batched] == [3, 3, 1]
    assert np.concatenate([b.scores for b in batched]).tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("line, message", [
    ("user1\tlikes\n", "line 2: expected head, relation and tail separated by tabs, got 2 fields"),
    ("user1\tloves\titem2\n", "line 2: unknown relation 'loves'"),
    ("item1\tlikes\titem2\n", "line 2: no entity named 'item1' of type 'user'"),
])
def test_query_command_triples_errors_name_the_line_and_write_nothing(run, tmp_path, capsys, line, message):
    path, *_ = run
    triples = tmp_path / "triples.tsv"
    triples.write_text("user0\tfollows\tuser1\n" + line)
    out = tmp_path / "scores.parquet"
    assert main(["query", str(path), "--triples", str(triples), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{triples}, {message}" in err and "Traceback" not in err
    assert not list(tmp_path.glob("scores.parquet*"))
    assert main(["query", str(path), "--triples", str(triples)]) == 2
    assert "give --out PATH" in capsys.readouterr().err
