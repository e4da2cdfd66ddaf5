"""evaluate(config, split) on a real dataset dir and a real checkpoint, against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bigkg.config import config_from_dict, config_to_dict
from bigkg.evaluation import evaluate
from bigkg.evaluation.evaluate import dataset_index, link_prediction_ranks, ranking_options, recommendation_metrics
from bigkg.evaluation.metrics import QueryRanks, ranking_metrics
from bigkg.evaluation.source import CheckpointSource, EvaluationError, open_run
from eval_datasets import RELS, random_triples as _triples, write_trained_run as _setup

def _brute_force(model, splits, by_index, split="test") -> dict[str, QueryRanks]:
    """Per side, each test triple's rank and its number of candidates (the answer and the
    entities of its type that make no other known triple), in the split's order."""
    known = {tuple(t) for s in splits.values() for t in s.tolist()}
    ranks = {"rhs": [], "lhs": []}
    candidates = {"rhs": [], "lhs": []}
    with torch.no_grad():
        for h, r, t in splits[split].tolist():
            _, ht, tt = RELS[r]
            rel = torch.tensor([r])
            s_t = model.score_candidates("rhs", by_index[ht][[h]], rel, by_index[tt])[0].double().numpy()
            s_h = model.score_candidates("lhs", by_index[tt][[t]], rel, by_index[ht])[0].double().numpy()
            for side, scores, answer, other in (("rhs", s_t, t, lambda x: (h, r, x)), ("lhs", s_h, h, lambda x: (x, r, t))):
                true = scores[answer]
                comp = [scores[x] for x in range(len(scores)) if x != answer and other(x) not in known]
                comp = np.array(comp)
                ranks[side].append(1 + (comp > true).sum() + (comp == true).sum() / 2)
                candidates[side].append(1 + len(comp))
    return {k: QueryRanks(np.array(ranks[k]), np.array(candidates[k])) for k in ranks}


@pytest.mark.parametrize("operator,overrides", [
    ("diagonal", []),
    ("translation", ["model.comparator=l2"]),
    ("affine", ["model.comparator=cos"]),  # heads scored by the per-relation fallback
    ("complex_diagonal", ["model.reciprocal=true"]),
])
def test_evaluate_matches_brute_force(tmp_path, operator, overrides):
    config, model, splits, by_index = _setup(tmp_path, operator=operator, overrides=overrides)
    result = evaluate(config, "test")
    ref = _brute_force(model, splits, by_index)
    both = QueryRanks.concatenate([ref["rhs"], ref["lhs"]])
    all_ranks = both.ranks
    assert result["count"] == 2 * len(splits["test"]) == 2 * result["triples"]
    assert result["mrr"] == pytest.approx(np.mean(1 / all_ranks), rel=1e-5)
    assert result["mr"] == pytest.approx(np.mean(all_ranks), rel=1e-5)
    assert result["hits@10"] == pytest.approx(np.mean(all_ranks <= 10))
    assert result["tails"]["mrr"] == pytest.approx(np.mean(1 / ref["rhs"].ranks), rel=1e-5)
    assert result["heads"]["mrr"] == pytest.approx(np.mean(1 / ref["lhs"].ranks), rel=1e-5)
    # The adjusted metrics from the brute-force ranks and candidate counts, overall and per side.
    assert np.unique(both.candidates).size > 3  # types of 12 and 20 entities, filters of different sizes
    adjusted = ("amr", "amri", "amrri")
    for got, ranked in ((result, both), (result["tails"], ref["rhs"]), (result["heads"], ref["lhs"])):
        expected = ranking_metrics(ranked.ranks, ranked.candidates)
        assert {k: got[k] for k in adjusted} == pytest.approx({k: expected[k] for k in adjusted}, rel=1e-5)
    assert result["epoch"] == 3 and result["checkpoint"] == "v000000"


def test_unseen_entities_are_kept_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    train = _triples(rng, 150)
    # Keep user 11 and item 19 out of training; two test triples use them.
    train = train[~(((train[:, 1] != 1) & (train[:, 0] == 11)) | ((train[:, 1] == 2) & (train[:, 2] == 11)))]
    train = train[~(((train[:, 1] != 2) & (train[:, 2] == 19)) | ((train[:, 1] == 1) & (train[:, 0] == 19)))]
    test = np.array([[11, 0, 3], [2, 1, 19], [1, 0, 2]])
    config, model, splits, by_index = _setup(tmp_path, splits={"train": train, "test": test})
    result = evaluate(config, "test")
    assert result["triples"] == 3 and result["count"] == 6
    assert result["unseen_entity_triples"] == 2
    ref = _brute_force(model, splits, by_index)
    assert result["mrr"] == pytest.approx(np.mean(1 / np.concatenate([ref["rhs"].ranks, ref["lhs"].ranks])), rel=1e-5)


def test_sampled_mode_reports_its_sampling(tmp_path):
    config, *_ = _setup(tmp_path, overrides=["eval.mode=sampled", "eval.num_sampled=4"])
    full_config, *_ = _setup(tmp_path / "b")
    sampled, full = evaluate(config, "test"), evaluate(full_config, "test")
    assert "uniform" in sampled["sampling"] and sampled["mode"] == "sampled"
    assert sampled["mr"] < full["mr"]
    # Adjusted by the sample's size, at most 4 candidates and the answer.
    assert sampled["mr"] / sampled["amr"] <= (5 + 1) / 2 < full["mr"] / full["amr"]


def test_recommendation_metrics_match_brute_force(tmp_path):
    rng = np.random.default_rng(7)
    # Items 15..19 are never liked: they are not items of the recommendation task.
    splits = {s: t[~((t[:, 1] == 0) & (t[:, 2] >= 15))] for s, t in
              (("train", _triples(rng, 200)), ("valid", _triples(rng, 30)), ("test", _triples(rng, 60)))}
    config, model, splits, by_index = _setup(tmp_path, overrides=["eval.rec_relation=likes", "eval.rec_k=[3,5]"],
                                             splits=splits)
    result = evaluate(config, "test")
    test, excluded = splits["test"], np.concatenate([splits["train"], splits["valid"]])
    # Items: tails of a "likes" edge in any split; the other items are never recommended.
    items = {t for s in splits.values() for _, r, t in s.tolist() if r == 0}
    assert len(items) <= 15
    recalls, ndcgs = [], []
    with torch.no_grad():
        for u in sorted(set(test[test[:, 1] == 0, 0].tolist())):
            relevant = set(test[(test[:, 1] == 0) & (test[:, 0] == u), 2].tolist())
            seen = set(excluded[(excluded[:, 1] == 0) & (excluded[:, 0] == u), 2].tolist())
            scores = model.score_candidates("rhs", by_index["user"][[u]], torch.tensor([0]), by_index["item"])[0]
            order = [i for i in torch.argsort(scores, descending=True).tolist() if i not in seen and i in items][:5]
            hits = [1.0 if i in relevant else 0.0 for i in order]
            recalls.append(sum(hits) / len(relevant))
            dcg = sum(h / math.log2(k + 2) for k, h in enumerate(hits))
            ndcgs.append(dcg / sum(1 / math.log2(k + 2) for k in range(min(5, len(relevant)))))
    assert result["rec_users"] == len(recalls)
    assert result["recall@5"] == pytest.approx(np.mean(recalls))
    assert result["ndcg@5"] == pytest.approx(np.mean(ndcgs))
    assert "recall@3" in result and result["rec_relation"] == "likes" and result["rec_items"] == len(items)
    # Split over three workers (each ranks every third user), the metrics are the same to the bit.
    run = open_run(config)
    index = dataset_index(config.dataset, run.manifest, "test", run.manifest.relation_index("likes"))
    shares = []
    for worker in (1, 2):
        sent: list[np.ndarray] = []
        recommendation_metrics(run, index.rec, "test", [3, 5], ranking_options(config, "cpu", (worker, 3)),
                               lambda values: sent.append(values) or values)
        shares.append(sent)
    assert result["rec_users"] >= 3  # every worker has users to rank
    others = iter(a + b for a, b in zip(*shares))
    split = recommendation_metrics(run, index.rec, "test", [3, 5], ranking_options(config, "cpu", (0, 3)),
                                   lambda values: values + next(others))
    assert split == {k: result[k] for k in split}


def test_errors_without_checkpoint_or_with_bad_split(tmp_path):
    config, *_ = _setup(tmp_path)
    with pytest.raises(EvaluationError, match="split"):
        evaluate(config, "dev")
    empty = config_from_dict({"dataset": config.dataset, "run_dir": str(tmp_path / "nothing")})
    with pytest.raises(EvaluationError, match="no complete checkpoint"):
        evaluate(empty, "test")
    bad = config_from_dict({"dataset": config.dataset, "run_dir": config.run_dir, "model": {"dim": 6, "operator": "diagonal"},
                            "eval": {"rec_relation": "nope"}})
    with pytest.raises(EvaluationError, match="nope"):
        evaluate(bad, "test")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_matches_cpu(tmp_path):
    config, *_ = _setup(tmp_path, overrides=["eval.rec_relation=likes"])
    cpu = evaluate(config, "test")
    gpu = evaluate(config_from_dict({**config_to_dict(config), "device": "cuda"}), "test")
    for key in ("mrr", "mr", "hits@1", "hits@10", "recall@10", "ndcg@10"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4), key


def test_checkpoint_source_encodes_partitions_on_its_device(tmp_path):
    """A partition is read on the CPU and moved to the source's device before the encoder sees
    it: a CUDA model's graph encoder has its layers there (meta stands in for the second device)."""
    config, *_ = _setup(tmp_path)
    run = open_run(config)
    source = CheckpointSource(run.version, run.manifest, run.model.to("meta"), device="meta")
    assert source.load("user", 0).device.type == "meta"
    assert run.source.load("user", 0).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_of_a_graph_encoder_matches_cpu(tmp_path):
    config, *_ = _setup(tmp_path, overrides=["model.encoder.name=compgcn", "model.encoder.layers=2"])
    cpu = evaluate(config, "test")
    gpu = evaluate(config_from_dict({**config_to_dict(config), "device": "cuda"}), "test")
    for key in ("mrr", "mr", "hits@1", "hits@10"):  # two layers of float sums: a near-tie may flip
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-3), key


def test_ranks_split_over_workers_add_up_to_the_unsplit_ones_bit_for_bit(tmp_path):
    """Three workers each rank every third query batch; their ranks and candidate counts,
    summed, are the single process's; evaluate gets the whole result through its sum_over_workers."""
    config, *_ = _setup(tmp_path, overrides=["eval.query_batch=7"])
    whole = evaluate(config, "test")
    run = open_run(config)
    index = dataset_index(config.dataset, run.manifest, "test")
    unsplit = link_prediction_ranks(run, index.triples, index.filters, ranking_options(config, "cpu"))
    shares = [link_prediction_ranks(run, index.triples, index.filters, ranking_options(config, "cpu", (w, 3))) for w in range(3)]
    for side, ranked in unsplit.items():
        assert all((share[side].ranks == 0).any() for share in shares)  # each worker left batches to the others
        np.testing.assert_array_equal(sum(share[side].ranks for share in shares), ranked.ranks)
        np.testing.assert_array_equal(sum(share[side].candidates for share in shares), ranked.candidates)
    # What workers 1 and 2 would put into each collective, added up: worker 0's collective.
    sent: list[list[np.ndarray]] = [[], []]
    for worker, values in zip((1, 2), sent):
        for side in ("rhs", "lhs"):
            shares[worker][side].summed(lambda v: values.append(v) or v)
    others = iter([a + b for a, b in zip(*sent)])
    result = evaluate(config, "test", shard=(0, 3), sum_over_workers=lambda values: values + next(others))
    keys = ("mrr", "mr", "hits@1", "hits@10", "count", "amr", "amri", "amrri", "tails", "heads")
    assert {k: result[k] for k in keys} == {k: whole[k] for k in keys}
