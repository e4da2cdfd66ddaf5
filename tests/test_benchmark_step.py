"""benchmarks/step.py end to end, small: one table row per dimension, whose closed-form
throughput agrees with its own milliseconds per step (1,000 edges a step)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_step_benchmark_prints_a_row_per_dimension():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--entities", "3000", "--batches", "2",
         "--rounds", "1", "--dims", "4", "8"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = rows
    assert [cell.strip() for cell in header][0] == "d"
    assert [row[0].strip() for row in body] == ["4", "8"]
    for row in body:
        closed_ms, edges_per_s = float(row[2]), float(row[4].replace(",", ""))
        assert abs(1000 / (closed_ms / 1e3) - edges_per_s) <= 0.02 * edges_per_s


@pytest.mark.parametrize("sides", [[], ["--sides", "--uniform", "10"]], ids=["both-sides", "tails-only"])
def test_step_benchmark_against_another_checkout_runs_both_in_turn(tmp_path, sides):
    """--against: the closed-form step of another checkout (here this one) and of this tree,
    each in its own worker; a row per dimension whose columns agree with each other."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--entities", "3000", "--batches", "2",
         "--rounds", "3", "--dims", "4", "8", "--against", str(REPO)] + sides,
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    assert ("the tail side's losses alone" if sides else "both sides' losses, 50 uniform") in out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = rows
    assert [cell.strip() for cell in header][:3] == ["d", "baseline ms/step", "this tree ms/step"]
    assert [row[0].strip() for row in body] == ["4", "8"]
    for row in body:
        base_ms, here_ms, speedup = float(row[1]), float(row[2]), float(row[3].strip().rstrip("×"))
        edges_per_s = float(row[5].replace(",", ""))
        assert abs(base_ms / here_ms - speedup) <= 0.01 + 0.02 * speedup
        assert abs(1000 / (here_ms / 1e3) - edges_per_s) <= 0.02 * edges_per_s

    refused = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--entities", "3000", "--against", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert refused.returncode != 0 and f"--against {tmp_path}: not a bigkg checkout" in refused.stderr


def test_step_benchmark_sides_times_both_sides_against_the_tail_side_per_step_kind():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--entities", "3000", "--batches", "2",
         "--rounds", "1", "--dims", "4", "--sides", "--uniform", "10"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    assert "10 uniform negatives per side trained" in out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = rows
    assert [cell.strip() for cell in header] == ["d", "step", "both sides ms/step", "tails only ms/step", "speed-up"]
    assert [row[1].strip() for row in body] == ["autograd", "closed form"]
    for row in body:
        both_ms, tails_ms, speedup = float(row[2]), float(row[3]), float(row[4].strip().rstrip("×"))
        assert abs(both_ms / tails_ms - speedup) <= 0.01 + 0.02 * speedup
