"""benchmarks/encoder.py end to end on a small graph cut from CoDEx-S: its tables on the CPU
(no GPU column), a clear refusal of a device it cannot use, and peak GPU memory on CUDA."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CODEX = REPO / "data" / "codex-s"
sys.path.insert(0, str(REPO))

from benchmarks.encoder import parse_device  # noqa: E402

MODES = ["FP32 (plain autograd)", "FP32 node-level", "INT8", "INT4", "INT2", "INT1"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    lines = (CODEX / "train.txt").read_text().splitlines()[:3000]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder


def run(data: Path, *options: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "encoder.py"), "--data", str(data), "--dim", "8", "--batch", "50",
         "--repeats", "1", "--threads", "1", "--thresholds", "2.5,1.0", *options],
        check=check, cwd=REPO, capture_output=True, text=True,
    )


def memory_table(output: str) -> dict[str, list[str]]:
    """The first table's cells after the mode, by mode."""
    section = output.split("## Saved activations per step")[1].split("## ")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_cpu_run_prints_saved_bytes_by_mode_without_a_gpu_column(small):
    out = run(small, "--device", "cpu").stdout
    table = memory_table(out)
    assert list(table) == MODES
    activations = [float(table[mode][0]) for mode in MODES]
    assert activations == sorted(activations, reverse=True) and activations[-1] > 0
    assert "peak GPU" not in out and "device" not in out.splitlines()[0]
    assert "## Encoder step, dense vs sparsified" in out and "| INT2 | 2.5, 1.0 |" in out


@pytest.mark.parametrize("name,message", [("tpu", "--device 'tpu'"), ("cuda:x", "--device 'cuda:x'"), ("cuda:99", "--device 'cuda:99'")])
def test_unusable_device_is_refused_by_name(name, message, capsys):
    with pytest.raises(SystemExit) as exit:
        parse_device(argparse.ArgumentParser(), name)
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert parse_device(argparse.ArgumentParser(), "cpu") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_reports_peak_gpu_memory_per_mode(small):
    out = run(small, "--device", "cuda").stdout
    assert "device cuda:" in out.splitlines()[0]
    table = memory_table(out)
    assert list(table) == MODES
    assert all(float(cells[-1]) > 0 for cells in table.values())  # the peak GPU MiB column
    assert out.count("lower peak GPU memory") == 3
