"""The training plot: a real PNG from a metrics log, and clear errors when there is nothing to plot."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import yaml

from bigkg.plot import PlotError, plot_run, series
from launcher.cli import main

RECORDS = [
    {"type": "bucket", "epoch": 0, "bucket": [0, 0], "edges": 10, "loss": 9.0},
    {"type": "epoch", "epoch": 0, "edges": 10, "loss": 20.0, "loss_per_edge": 2.0},
    {"type": "valid", "epoch": 0, "mrr": 0.1, "tails": {"mrr": 0.1}},
    {"type": "epoch", "epoch": 1, "edges": 10, "loss": 1.5},
    {"type": "valid", "epoch": 1, "mrr": 0.2},
    {"type": "epoch", "epoch": 2, "edges": 10, "loss": 1.2},
]


def test_series_picks_epoch_loss_and_valid_mrr():
    loss, mrr = series(RECORDS)
    assert loss == [(1, 2.0), (2, 1.5), (3, 1.2)]
    assert mrr == [(1, 0.1), (2, 0.2)]


def test_plot_run_writes_png(tmp_path):
    log = tmp_path / "metrics.jsonl"
    # The last line was cut by a kill: the rest still plots.
    log.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + '{"type": "ep')
    out = plot_run(tmp_path)
    assert out == tmp_path / "training.png"
    image = mpimg.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert not list(tmp_path.glob("*.tmp-*"))


def test_plot_errors(tmp_path):
    with pytest.raises(PlotError, match="does not exist"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(RECORDS[0]) + "\n")
    with pytest.raises(PlotError, match="no finished epoch"):
        plot_run(tmp_path)


@pytest.mark.parametrize("bad_line, words", [
    ("{bad", "line 3: not a JSON record"),  # damaged in the middle: not a kill's cut last line, so not silently cut there
    ("[1, 2]", "line 3: expected a JSON object, got [1, 2]"),
    ('{"type": "epoch", "epoch": "x", "loss": 1}', "line 3: epoch record without a numeric epoch and value"),
    ('{"type": "valid", "epoch": 2, "mrr": null}', "line 3: valid record without a numeric epoch and value"),
])
def test_malformed_metrics_line_is_named_and_nothing_is_written(tmp_path, capsys, bad_line, words):
    lines = [json.dumps(r) for r in RECORDS]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:2] + [bad_line] + lines[2:]) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": "x", "run_dir": str(tmp_path)}))
    assert main(["plot", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'metrics.jsonl'}: {words}" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "metrics.jsonl"]


def test_plot_command(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": "x", "run_dir": str(tmp_path)}))
    assert main(["plot", str(config), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
