"""The GPU-session benchmarks: fb15k237_gpu.py end to end at tiny scale, its config, the session scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from bigkg.config import load_config
from bigkg.evaluation import evaluate
from bigkg.format import load_manifest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.pbg_env import in_loop_rate  # noqa: E402

CODEX = REPO / "data" / "codex-s"


def test_gpu_config_holds_pbg_fb15k_gpu_settings():
    config = load_config(REPO / "benchmarks" / "configs" / "fb15k237_gpu.yaml", ["dataset=x", "run_dir=y"])
    m, t = config.model, config.training
    assert (m.dim, m.operator, m.comparator, m.reciprocal) == (400, "complex_diagonal", "dot", True)
    assert (m.regularizer, m.regularization_weight) == ("n3", 1e-3)
    assert (t.batch_size, t.chunk_size, t.num_uniform_negatives, t.negatives, t.loss, t.lr) == (5000, 50, 1000, "batched", "softmax", 0.1)
    assert t.epochs == 50 and config.device == "cuda"


def tiny_archive(tmp_path: Path) -> Path:
    """A .tar.xz laid out like FB15k-237's (a folder of train/valid/test.txt), cut from CoDEx-S."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    for split, rows in (("train", 4000), ("valid", 200), ("test", 200)):
        lines = (CODEX / f"{split}.txt").read_text().splitlines()[:rows]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    archive = tmp_path / "tiny.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(folder, arcname="tiny")
    return archive


def run_benchmark(tmp_path: Path, device: str) -> dict:
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fb15k237_gpu.py"), "--data", str(tiny_archive(tmp_path)),
         "--device", device, "--dims", "8", "--epochs", "2", "--eval-every", "1", "--target-mrr", "0",
         "--work", str(tmp_path / "work"), "--json", str(out), "--set", "training.threads=1",
         "--set", "training.batch_size=500", "--set", "training.num_uniform_negatives=50"],
        check=True, cwd=REPO, capture_output=True,
    )
    return json.loads(out.read_text())


def test_fb15k237_benchmark_ranks_test_each_epoch_and_times_the_target(tmp_path):
    result = run_benchmark(tmp_path, "cpu")
    (run,) = result["runs"]
    dataset = tmp_path / "work" / "dataset_p1"
    assert run["edges_per_epoch"] == load_manifest(dataset).split_count("train")
    assert [t["epoch"] for t in run["timeline"]] == [1, 2]
    # target 0: the first evaluation reaches it, and its wall time is within the run's
    assert run["epoch_reaching_target"] == 1
    assert 0 < run["wall_s_to_target"] == run["timeline"][0]["wall_s"] <= run["wall_s_without_eval"]
    assert run["peak_train_bytes"] is None and run["device"] == "cpu"
    # the last test MRR is the final checkpoint's, as `bigkg eval` computes it
    config = load_config(tmp_path / "work" / "run_d8" / "config.yaml")
    assert run["final_test_mrr"] == pytest.approx(evaluate(config, "test")["mrr"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fb15k237_benchmark_reports_gpu_memory(tmp_path):
    (run,) = run_benchmark(tmp_path, "cuda")["runs"]
    assert run["device"].startswith("cuda")
    assert run["peak_train_bytes"] > 0 and run["peak_eval_bytes"] > 0


def test_pbg_in_loop_rate_reads_its_bucket_lines():
    log = (
        "2026-11-25 INFO bucket 1 / 1 : Processed 300000 edges in 2.00 s ( 0.15 M/sec ); io: 0.01 s ( 10.0 MB/sec )\n"
        "2026-11-25 INFO Finished epoch 1 / 2\n"
        "2026-11-25 INFO bucket 1 / 1 : Processed 300000 edges in 1.00 s ( 0.3 M/sec ); io: 0.01 s ( 10.0 MB/sec )\n"
    )
    assert in_loop_rate(log) == pytest.approx(600000 / 3.0)
    assert in_loop_rate("no bucket trained") is None


@pytest.mark.parametrize("script", ["gpu_session.sh", "prepare_device.sh"])
def test_session_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], check=True)


def test_gpu_profile_reports_each_variant_and_its_profiled_epoch(tmp_path):
    """benchmarks/gpu_profile.py (the GPU session's `profile` stage), on the CPU at tiny
    scale: one table row per variant with its overrides and edges/s, and the operations
    taking most host time in its profiled epoch."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_profile.py"), "--device", "cpu", "--data", str(tiny_archive(tmp_path)),
         "--epochs", "2", "--work", str(tmp_path / "work"),
         "--variant", "closed=model.dim=8,training.batch_size=500,training.num_uniform_negatives=20,training.threads=1",
         "--variant", "autograd=model.dim=8,training.batch_size=500,training.num_uniform_negatives=20,training.threads=1,"
                      "training.closed_form_softmax=false"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| closed ")
            or line.startswith("| autograd ")}
    assert set(rows) == {"closed", "autograd"}
    assert "training.closed_form_softmax=false" in rows["autograd"][0]
    for cells in rows.values():
        assert float(cells[1].replace(",", "")) > 0 and float(cells[3]) > 0  # edges/s, aten ops per step
    assert "closed: the operations taking most host time per step" in out and "| aten::" in out


def test_row_update_benchmark_times_every_path():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "row_update.py"), "--rows", "50", "--dim", "4", "--positives", "10",
         "--negatives", "30", "--rounds", "1"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    timed = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "ms per" not in line]
    assert timed == ["sorted (torch)", "whole table (torch)", "compiled (numba, CPU)"]
