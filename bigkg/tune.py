"""Hyperparameter search over a config, with Optuna: ``bigkg tune`` (PyKEEN's hpo_pipeline).

A search-space file names config options and the values to try. Each trial trains the base
config with one sample of them, in its own run directory (``OUT/trials/NNNN``), and scores
it by its best validation MRR. Every validation is also reported to the pruner, which stops a
trial that trails the earlier ones at the same epoch. The study is kept in a journal file in
``OUT``, so an interrupted search resumes: finished trials stay, the one cut short is marked
failed, and only the trials still missing run. Several ``bigkg tune`` processes (one per GPU,
or per machine on a shared filesystem) may work on one ``OUT`` at once: each trial records
its process, and only a trial whose process is gone is taken for cut short.
``OUT/best.yaml`` is the best trial's config.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bigkg.atomic import current_boot_id, other_process_alive, write_text_atomic
from bigkg.config import Config, ConfigError, config_from_dict, config_to_dict, config_to_yaml, read_yaml_file
from bigkg.errors import BigKGError
from bigkg.format import load_manifest
from bigkg.training import train

log = logging.getLogger(__name__)

STUDY_NAME = "bigkg-tune"
# A trial is running before its process records itself in it; one without a record this old
# was cut short in that moment, not merely started by another process a moment ago.
UNOWNED_GRACE_SECONDS = 300.0
SAMPLERS = ("tpe", "random")
_RANGE_FIELDS = {"low", "high", "log", "step"}


class TuneError(BigKGError):
    """A search that cannot start: a bad space file, base config or output directory."""


@dataclass(frozen=True)
class Dimension:
    """One option of the search: a list of choices, or a range of numbers (integers when
    ``low`` and ``high`` are both integers)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and isinstance(self.step, (int, type(None)))

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices, or inside the range (on its steps)."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.integer and value != int(value):
            return False
        return self.step is None or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9

    def extremes(self) -> list[Any]:
        """The values a check of the space tries: every choice, or both ends of the range."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def load_space(path: str | Path) -> list[Dimension]:
    """The dimensions of a search-space file: ``option: [choices]`` or ``option: {low, high,
    log?, step?}`` per line; errors name the file and the option."""
    path = Path(path)
    data = read_yaml_file(path, "search space", TuneError)
    if not isinstance(data, dict) or not data:
        raise TuneError(f"{path}: expected a mapping of config options to choices or ranges")
    return [_dimension(path, str(key), spec) for key, spec in data.items()]


def _dimension(path: Path, key: str, spec: Any) -> Dimension:
    where = f"{path}: {key}"
    if isinstance(spec, list):
        if not spec:
            raise TuneError(f"{where}: an empty list of choices")
        return Dimension(key, choices=tuple(spec))
    if not isinstance(spec, dict):
        raise TuneError(f"{where}: expected a list of choices or a mapping with low and high, got {spec!r}")
    unknown = set(spec) - _RANGE_FIELDS
    if unknown:
        raise TuneError(f"{where}: unknown field {sorted(unknown)[0]!r}; a range has {', '.join(sorted(_RANGE_FIELDS))}")
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    for name, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TuneError(f"{where}: {name} must be a number, got {value!r}")
    if low is None or high is None or not low < high:
        raise TuneError(f"{where}: a range needs numbers low < high, got low {low!r}, high {high!r}")
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise TuneError(f"{where}: log must be true or false, got {log_scale!r}")
    if log_scale and (low <= 0 or step is not None):
        raise TuneError(f"{where}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise TuneError(f"{where}: step must be positive, got {step!r}")
    return Dimension(key, low=low, high=high, log=log_scale, step=step)


def trial_config(base: Config, values: dict[str, Any], run_dir: Path) -> Config:
    """``base`` with the sampled ``values`` and its own ``run_dir``."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in {**values, "run_dir": str(run_dir)}.items()]  # JSON is YAML
    return config_from_dict(config_to_dict(base), overrides)


def check_search(base: Config, space: list[Dimension], space_path: str | Path) -> None:
    """Refuse, before any training, a search whose trials could not validate or whose options
    or values the config does not accept."""
    if base.eval.valid_every < 1:
        raise TuneError("eval.valid_every is 0: trials are scored by their validation MRR; set it to 1 or more")
    manifest = load_manifest(base.dataset)
    if manifest.split_count("valid") == 0:
        raise TuneError(f"dataset {base.dataset} has no valid split to score the trials by")
    for dim in space:
        for value in dim.extremes():
            try:
                config = trial_config(base, {dim.key: value}, Path("check"))
            except ConfigError as exc:
                raise TuneError(f"{space_path}: {dim.key} = {value!r}: {exc}") from exc
            if config.training.epochs < config.eval.valid_every:
                raise TuneError(f"{space_path}: {dim.key} = {value!r}: training.epochs {config.training.epochs} is "
                                f"below eval.valid_every {config.eval.valid_every}, so the trial would never validate")


def base_values(base: Config, space: list[Dimension]) -> dict[str, Any]:
    """The config's own values of the searched options, to try as a trial; an error names an
    option whose value lies outside its choices or range."""
    flat = config_to_dict(base)
    values = {}
    for dim in space:
        value: Any = flat
        for part in dim.key.split("."):
            value = value[part]
        if not dim.holds(value):
            raise TuneError(f"the config's {dim.key} = {value!r} is outside the searched values: it cannot be tried")
        values[dim.key] = int(value) if dim.integer else value
    return values


def _search_record(base: Config, space: list[Dimension]) -> dict[str, Any]:
    """What a resumed search, or another process on it, must share with the search: all but
    where and on what it runs."""
    config = config_to_dict(base)
    for key in ("run_dir", "device"):
        config.pop(key)
    config["training"].pop("threads")
    return {"config": config, "space": [dataclasses.asdict(dim) for dim in space]}


def _open_study(out: Path, record: dict[str, Any], sampler: str, prune: bool, prune_warmup: int, seed: int) -> optuna.Study:
    """The study of ``out``: created, or loaded when ``out`` holds one of the same search."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TuneError(f"--out {out}: cannot create the search's directory: {exc}") from exc
    record_path = out / "search.json"
    if record_path.is_file():
        if json.loads(record_path.read_text()) != json.loads(json.dumps(record)):
            raise TuneError(f"{out} holds a search of another config or space (see {record_path}); "
                            "give another output directory")
    else:
        write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
    chosen = optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=prune_warmup) if prune else optuna.pruners.NopPruner()
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=chosen,
                                pruner=pruner, load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _abandoned(trial):
            log.warning("trial %d was cut short by an earlier interruption: marked failed", trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
    return study


def _owner() -> dict[str, Any]:
    """Who runs a trial: this machine, its boot and this process."""
    return {"host": socket.gethostname(), "boot_id": current_boot_id(), "pid": os.getpid()}


def _abandoned(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a running trial's process is gone. One of another machine is left to it: from
    here nobody can tell whether it still runs."""
    owner = trial.user_attrs.get("owner")
    if not isinstance(owner, dict):
        started = trial.datetime_start
        return started is None or (datetime.datetime.now() - started).total_seconds() > UNOWNED_GRACE_SECONDS
    if owner.get("host") != socket.gethostname():
        return False
    return owner.get("boot_id") != current_boot_id() or not other_process_alive(owner.get("pid"))


def tune(base: Config, space: list[Dimension], out: str | Path, trials: int, *, sampler: str = "tpe",
         prune: bool = True, prune_warmup: int = 0, timeout: float | None = None,
         enqueue: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """Run the search until ``trials`` trials have ended (complete, pruned or failed), resuming
    the one in ``out``; returns the summary, and writes ``out/best.yaml``. ``prune_warmup``:
    validations of the first that many epochs never prune. ``timeout``: seconds after which
    no new trial starts (the one running finishes). ``enqueue``: values to try first (options
    not named are sampled)."""
    if trials < 1:
        raise TuneError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise TuneError(f"--timeout must be positive, got {timeout}")
    if prune_warmup < 0:
        raise TuneError(f"--prune-warmup must be at least 0, got {prune_warmup}")
    if sampler not in SAMPLERS:
        raise TuneError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    out = Path(out)
    study = _open_study(out, _search_record(base, space), sampler, prune, prune_warmup, base.seed)
    for values in enqueue:
        study.enqueue_trial(values, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", _owner())
        values = {dim.key: dim.suggest(trial) for dim in space}
        config = trial_config(base, values, out / "trials" / f"{trial.number:04d}")

        def report(epoch: int, mrr: float) -> None:
            trial.report(mrr, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"valid MRR {mrr:.4f} after epoch {epoch + 1}")

        summary = train(config, fresh=True, on_validation=report)
        if summary["best_valid_mrr"] is None:  # e.g. stopped before its first validation
            raise TuneError(f"trial {trial.number} ended without a validation")
        return float(summary["best_valid_mrr"])

    # Other processes' running trials count: together they stop at ``trials``.
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    if trials > len(study.get_trials(deepcopy=False, states=counted)):
        # A trial whose training fails (a NaN loss at a large learning rate) fails alone.
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted)],
                       timeout=timeout, catch=(BigKGError,))
    return _finish(study, base, space, out)


def _finish(study: optuna.Study, base: Config, space: list[Dimension], out: Path) -> dict[str, Any]:
    rows = [{"trial": t.number, "state": t.state.name.lower(), "valid_mrr": t.value,
             "last_epoch": max(t.intermediate_values, default=None), "params": t.params} for t in study.trials]
    summary: dict[str, Any] = {"out": str(out), "trials": rows, "best": None}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        run_dir = out / "trials" / f"{best.number:04d}"
        write_text_atomic(out / "best.yaml", config_to_yaml(trial_config(base, best.params, run_dir)))
        summary["best"] = {"trial": best.number, "valid_mrr": best.value, "params": best.params,
                           "run_dir": str(run_dir), "config": str(out / "best.yaml")}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
