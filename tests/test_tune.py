"""``bigkg tune``: the search space, trials trained for real on CoDEx-S, pruning, resuming."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

# A declared dependency; the benchmark machines' bare Pythons (benchmarks/gpu_session.sh) lack it.
optuna = pytest.importorskip("optuna")

from bigkg import tune as tune_module  # noqa: E402
from bigkg.config import config_from_dict, load_config  # noqa: E402
from bigkg.tune import TuneError, base_values, check_search, load_space, tune  # noqa: E402
from launcher.cli import main  # noqa: E402


def base_config(dataset: Path, **training) -> dict:
    return {"dataset": str(dataset), "run_dir": "unused", "seed": 0,
            "model": {"dim": 16, "operator": "complex_diagonal", "reciprocal": True},
            "training": {"epochs": 2, "batch_size": 1000, "threads": 1, "lr": 0.3, **training},
            "eval": {"valid_every": 1}}


def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("training.lr: {low: 1, high: 0.1}\n", "training.lr: a range needs numbers low < high"),
    ("training.lr: {low: 0.1, high: 1, scale: log}\n", "training.lr: unknown field 'scale'"),
    ("training.lr: {low: 0, high: 1, log: true}\n", "training.lr: a log range needs low > 0"),
    ("model.dim: []\n", "model.dim: an empty list of choices"),
    ("model.dim: 64\n", "model.dim: expected a list of choices or a mapping"),
    ("- model.dim\n", "expected a mapping of config options"),
])
def test_a_bad_space_file_is_named_with_its_option(tmp_path, text, message):
    path = write_space(tmp_path / "space.yaml", text)
    with pytest.raises(TuneError, match=f"{path}.*{message}"):
        load_space(path)


def test_options_and_values_the_config_refuses_stop_the_search_before_training(codex2, tmp_path):
    base = config_from_dict(base_config(codex2))
    for text, message in (("training.lr_typo: [0.1]\n", "training.lr_typo"),
                          ("model.operator: [diagonal, spline]\n", "model.operator = 'spline'")):
        path = write_space(tmp_path / "space.yaml", text)
        with pytest.raises(TuneError, match=message):
            check_search(base, load_space(path), path)
    no_validation = config_from_dict(base_config(codex2), ["eval.valid_every=0"])
    with pytest.raises(TuneError, match="eval.valid_every is 0"):
        check_search(no_validation, load_space(write_space(tmp_path / "s.yaml", "model.dim: [8]\n")), "s.yaml")
    outside = load_space(write_space(tmp_path / "s.yaml", "training.lr: {low: 0.5, high: 1.0}\nmodel.dim: [8, 16]\n"))
    with pytest.raises(TuneError, match="the config's training.lr = 0.3 is outside the searched values"):
        base_values(base, outside)
    stepped = load_space(write_space(tmp_path / "s.yaml", "training.epochs: {low: 1, high: 9, step: 2}\n"))
    with pytest.raises(TuneError, match="training.epochs = 2 is outside"):
        base_values(base, stepped)  # 2 is not on the steps 1, 3, 5, ...
    with pytest.raises(TuneError, match="training.epochs = 1: training.epochs 1 is below eval.valid_every 2"):
        check_search(config_from_dict(base_config(codex2), ["eval.valid_every=2"]),
                     load_space(write_space(tmp_path / "s.yaml", "training.epochs: {low: 1, high: 4}\n")), "s.yaml")


def test_trials_train_for_real_and_best_yaml_is_the_best_trial(codex2, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(codex2)))
    space = write_space(tmp_path / "space.yaml", "training.lr: {low: 0.05, high: 1.0, log: true}\nmodel.dim: [8, 16]\n")
    out = tmp_path / "search #1: a"  # YAML would read '#' as a comment and ': ' as a mapping
    args = ["tune", str(config), "--space", str(space), "--out", str(out), "--sampler", "random", "--no-prune"]
    assert main([*args, "--trials", "3", "--try-base", "--json", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["complete"] * 3
    assert summary["trials"][0]["params"] == {"training.lr": 0.3, "model.dim": 16}  # the config's own values
    for trial in summary["trials"]:  # each trial's value is the best validation of its own run
        records = [json.loads(line) for line in (out / "trials" / f"{trial['trial']:04d}" / "metrics.jsonl").open()]
        assert trial["valid_mrr"] == max(r["mrr"] for r in records if r["type"] == "valid")
    best = max(summary["trials"], key=lambda t: t["valid_mrr"])
    assert summary["best"]["trial"] == best["trial"]
    chosen = load_config(out / "best.yaml")
    assert chosen.training.lr == best["params"]["training.lr"] and chosen.model.dim == best["params"]["model.dim"]
    assert Path(chosen.run_dir) == out / "trials" / f"{best['trial']:04d}"
    assert f"best: trial {best['trial']}" in capsys.readouterr().out
    # Out of time after its first trial, a search stops there; a later run goes on.
    assert main([*args, "--trials", "9", "--timeout", "0.001", "--json", str(tmp_path / "timed.json")]) == 0
    assert len(json.loads((tmp_path / "timed.json").read_text())["trials"]) == 4
    # Asked for 5 in all, the search resumes with one more trial; the first four stay as they were.
    # (Another device or thread count, as another process of the search would have, is the same search.)
    assert main([*args, "--trials", "5", "--json", str(tmp_path / "again.json"), "--set", "device=auto",
                 "--set", "training.threads=2"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["trials"][:3] == summary["trials"] and len(again["trials"]) == 5
    # Another space in the same directory would mix two searches: refused.
    other = write_space(tmp_path / "other.yaml", "training.lr: [0.1, 0.2]\n")
    assert main(["tune", str(config), "--space", str(other), "--out", str(out), "--trials", "6"]) == 2
    assert "holds a search of another config or space" in capsys.readouterr().err
    assert main([*args, "--trials", "5", "--out", str(config)]) == 2  # a file where the directory goes
    assert f"--out {config}: cannot create the search's directory" in capsys.readouterr().err


def test_a_trailing_trial_is_pruned_and_an_interrupted_one_is_marked_failed(codex2, tmp_path, monkeypatch):
    base = config_from_dict(base_config(codex2, epochs=3))
    space = load_space(write_space(tmp_path / "space.yaml", "training.lr: {low: 0.000001, high: 1.0, log: true}\n"))
    out = tmp_path / "search"
    # Three trials that learn, then one whose learning rate is too small to move the vectors.
    first = tune(base, space, out, 3, enqueue=[{"training.lr": lr} for lr in (0.2, 0.3, 0.5)])
    assert [t["state"] for t in first["trials"]] == ["complete"] * 3
    # A search killed mid-trial leaves it running in the journal: a later start marks it failed,
    # but not a trial another live process (another `bigkg tune` on the same study) is running.
    study = optuna.load_study(study_name="bigkg-tune", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    with subprocess.Popen(["sleep", "60"]) as alive:
        study.ask().set_user_attr("owner", {**tune_module._owner(), "pid": alive.pid})
        study.ask()  # killed before it recorded its process (or another one is about to: see below)
        with monkeypatch.context() as patch:
            patch.setattr(tune_module, "UNOWNED_GRACE_SECONDS", 0.0)
            # The live process's trial counts toward the six: one more runs here.
            summary = tune(base, space, out, 6, enqueue=[{"training.lr": 0.000001}])
        alive.kill()
    states = [t["state"] for t in summary["trials"]]
    assert states[:3] == ["complete"] * 3 and states[3:5] == ["running", "fail"]
    slow = summary["trials"][5]
    assert slow["state"] == "pruned" and slow["params"] == {"training.lr": 0.000001}
    assert slow["last_epoch"] == 0 and len(summary["trials"]) == 6  # pruned at its first validation
    # Within the grace period a trial without its process's record is one just started: left running.
    study.ask()
    assert tune(base, space, out, 6)["trials"][6]["state"] == "running"
    # With a warm-up of two epochs it is judged first at its third validation. (The live process
    # has ended meanwhile: its trial is marked failed now, the seventh to end.)
    later = tune(base, space, out, 8, prune_warmup=2, enqueue=[{"training.lr": 0.0000011}])["trials"]
    assert later[3]["state"] == "fail" and later[6]["state"] == "running"
    later = later[7]
    assert later["state"] == "pruned" and later["last_epoch"] == 2
    assert summary["best"]["valid_mrr"] == max(t["valid_mrr"] for t in first["trials"])
