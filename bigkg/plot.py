"""PNG of training loss and validation MRR per epoch, from a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bigkg.atomic import atomic_file  # noqa: E402
from bigkg.errors import BigKGError  # noqa: E402
from bigkg.training.metrics import MetricsLog  # noqa: E402

PLOT_NAME = "training.png"


class PlotError(BigKGError):
    """Nothing to plot: no metrics log, or no finished epoch in it."""


def series(records: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(epoch, loss per edge) of finished epochs and (epoch, valid MRR) of validations.

    Records number epochs from 0; the plot numbers them from 1, as the training
    log and the checkpoint's epoch count do. The last record of an epoch wins;
    epochs that log only a total ``loss`` plot that.
    """
    loss: dict[int, float] = {}
    mrr: dict[int, float] = {}
    for line, r in enumerate(records, 1):
        try:
            if r.get("type") == "epoch" and ("loss_per_edge" in r or "loss" in r):
                loss[int(r["epoch"]) + 1] = float(r.get("loss_per_edge", r.get("loss")))
            elif r.get("type") == "valid" and "mrr" in r:
                mrr[int(r["epoch"]) + 1] = float(r["mrr"])
        except (KeyError, TypeError, ValueError) as exc:  # a hand-edited or foreign record
            raise PlotError(f"line {line}: {r.get('type')} record without a numeric epoch and value: {r}") from exc
    return sorted(loss.items()), sorted(mrr.items())


def plot_training(records: list[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Write the loss / valid-MRR figure of ``records`` to ``out`` (PNG)."""
    loss, mrr = series(records)
    if not loss and not mrr:
        raise PlotError("the metrics log has no finished epoch or validation to plot")
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if loss:
            ax_loss.plot([e for e, _ in loss], [v for _, v in loss], "o-", color="tab:blue", label="training loss per edge")
        ax_loss.set_xlabel("epoch")
        ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_loss.set_ylabel("training loss per edge", color="tab:blue")
        if mrr:
            ax_mrr = ax_loss.twinx()
            ax_mrr.plot([e for e, _ in mrr], [v for _, v in mrr], "s-", color="tab:red", label="valid MRR (filtered)")
            ax_mrr.set_ylabel("valid MRR (filtered)", color="tab:red")
        ax_loss.set_title(title or "training loss and validation MRR per epoch")
        fig.tight_layout()
        with atomic_file(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(out)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot ``run_dir/metrics.jsonl`` to ``out`` (default ``run_dir/training.png``)."""
    run_dir = Path(run_dir)
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        raise PlotError(f"{log} does not exist: train first (bigkg train)")
    try:
        return plot_training(MetricsLog(log).read(), out or run_dir / PLOT_NAME, title=f"{run_dir.name}")
    except PlotError as exc:  # about the log's records: name the log
        raise PlotError(f"{log}: {exc}") from exc
