"""The package's Python API: docs/python.md's walk-through runs as written, and its results
are the checkpoint's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import bigkg

REPO = Path(__file__).resolve().parents[1]


def test_import_bigkg_loads_nothing_until_a_name_is_used():
    code = ("import sys, bigkg; before = 'torch' in sys.modules or 'bigkg.config' in sys.modules; "
            "bigkg.load_config; print(before, 'bigkg.config' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["False", "True", "False"]
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        bigkg.trian  # noqa: B018
    assert sorted(dir(bigkg)) == sorted(bigkg.__all__)
    for name in bigkg.__all__:  # every public name resolves to its module's object
        assert getattr(bigkg, name) is not None


def test_the_walkthrough_of_docs_python_md_runs_and_agrees_with_the_checkpoint(tmp_path, capsys, monkeypatch):
    (block,) = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python.md").read_text(), re.S)
    for name in ("data", "configs"):
        os.symlink(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "docs/python.md", "exec"), ns)  # noqa: S102 (our own documentation)
    printed = capsys.readouterr().out
    run, metrics = ns["run"], ns["metrics"]
    assert f"test MRR {metrics['mrr']:.4f} over {metrics['count']} triples" in printed
    assert metrics["count"] == 2 * 1828 and 0 < metrics["mrr"] < 1

    # vectors are the exported rows of those names (a shallow model: its embeddings)
    exported = pq.read_table(tmp_path / "out" / "codex-s-api.parquet").to_pydict()
    assert len(exported["name"]) == sum(sum(et.partition_counts) for et in run.manifest.entity_types)
    row = {name: torch.tensor(vector) for name, vector in zip(exported["name"], exported["embedding"])}
    assert torch.equal(ns["vectors"], torch.stack([row["Q188"], row["Q30"]]))
    # scores are the model's tail scores of the exported rows; the first triple is a training edge
    rel = torch.tensor([[run.manifest.relation_index("P1412")]])
    with torch.no_grad():
        expected = [run.model.score_candidates("rhs", row["Q7604"].view(1, 1, -1), rel, row[t].view(1, 1, -1)).item()
                    for t in ("Q188", "Q1860")]
    assert ns["scored"].scores.tolist() == pytest.approx(expected, rel=1e-5)
    assert ns["scored"].known.tolist() == [True, False]
    # a query's answers, best first, carry the scores of their triples
    answers = bigkg.query(run, "P1412", 5, head="Q7604")
    (scored,) = bigkg.score_triples(run, [("Q7604", "P1412", a.name) for a in answers])
    assert [a.score for a in answers] == pytest.approx(scored.scores.tolist(), rel=1e-5)
    assert [a.score for a in answers] == sorted([a.score for a in answers], reverse=True)
    assert [a.known for a in answers] == scored.known.tolist()
    assert ns["kind"] == "entity" and len(ns["neighbours"]) == 5
