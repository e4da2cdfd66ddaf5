"""benchmarks/gradient_error.py end to end on a small graph cut from CoDEx-S: per parameter,
the error of quantized gradients grows as bits shrink, and the quantization touches
gradients only (the forward pass, hence the decoder's gradient, is exact)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODEX = REPO / "data" / "codex-s"
LABELS = ["INT8", "INT4", "INT2", "INT1"]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[float, float]]]:
    folder = tmp_path_factory.mktemp("small")
    lines = (CODEX / "train.txt").read_text().splitlines()[:3000]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gradient_error.py"), "--data", str(folder), "--dim", "16",
         "--batch", "200", "--draws", "2", "--threads", "1", "--thresholds", "dense"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in rows[0][1:]] == [f"{label} {what}" for label in LABELS for what in ("cosine", "rel. error")]
    cells = {r[0].strip(): [float(c) for c in r[1:]] for r in rows[1:]}
    return {name: list(zip(values[0::2], values[1::2])) for name, values in cells.items()}


def test_every_gradient_is_reported(table):
    assert {"entity embeddings", "decoder relations", "all parameters"} <= set(table)
    assert "encoder layers.1.transform.weight" in table and "encoder layers.0.self_loop.weight" in table


def test_fewer_bits_give_larger_weight_gradient_errors(table):
    errors = [error for _, error in table["encoder layers.1.transform.weight"]]
    assert errors == sorted(errors) and errors[0] < 0.05 < errors[-1]
    cosines = [cosine for cosine, _ in table["all parameters"]]
    assert cosines == sorted(cosines, reverse=True) and cosines[0] > 0.999


def test_forward_stays_exact(table):
    # The decoder's relations see only the encoder's output, which every mode computes exactly.
    assert all(error < 1e-4 for _, error in table["decoder relations"])
