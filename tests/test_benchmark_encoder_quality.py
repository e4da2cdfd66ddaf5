"""benchmarks/encoder_quality.py on CoDEx-S: a run takes its settings from ``--config``."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_runs_take_the_decoder_and_training_settings_of_the_config(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "codex-s.yaml").read_text())
    config["model"]["dim"] = 24  # neither the script's default (64) nor the shipped file's
    config["training"].update(epochs=1, workers=1, threads=1)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "encoder_quality.py"), "--data", str(REPO / "data" / "codex-s"),
         "--config", str(path), "--only", "shallow", "CompGCN FP32 sparsified hard"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"operator {config['model']['operator']}, d=24, 1 epochs" in done.stdout
    rows = {cells[0].strip(): cells[1:] for cells in
            (line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line)}
    assert float(rows["shallow"][0]) > 0.05  # test MRR after one epoch; random ranking gives ~0.002
    assert rows["CompGCN FP32 sparsified hard"][4].strip()  # an encoder row reports its kept edges
