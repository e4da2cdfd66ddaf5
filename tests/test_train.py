"""Training end to end on real data: it learns, it resumes after SIGKILL, bad input is a clear error."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bigkg import checkpoint
from bigkg.checkpoint import CheckpointError, CheckpointStore
from bigkg.config import ConfigError, config_from_dict, load_config
from bigkg.evaluation import evaluate
from bigkg.edge_chunks import WHOLE_BUCKET, EdgeChunk
from bigkg.errors import BigKGError
from bigkg.format import (
    BucketEdges, DatasetError, EntityType, Manifest, Relation, bucket_key, load_manifest, read_bucket, write_bucket,
)
from bigkg.model import build_model
from bigkg.optim import RowAdagrad
from bigkg.run_lock import RunDirInUse
from bigkg.schedule import Bucket
from bigkg.storage import BucketLoader, all_partition_keys
from bigkg.training import TrainingError, train
from bigkg.training.builders import build_relation_weights
from bigkg.training.trainer import Trainer
from eval_datasets import RELS, TYPES, random_triples, write_dataset
from launcher.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def small_config(dataset: Path, run_dir: Path, **sections) -> dict:
    base = {
        "dataset": str(dataset),
        "run_dir": str(run_dir),
        "model": {"dim": 16, "operator": "complex_diagonal", "reciprocal": True},
        "training": {"epochs": 2, "batch_size": 500, "threads": 1, "lr": 0.1},
        "eval": {"valid_every": 0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values) if isinstance(values, dict) else base.update({name: values})
    return base


def tail_mrr(dataset: Path, run_dir: Path, config) -> float:
    """Raw MRR of ranking each test tail among all entities, computed here from a checkpoint."""
    manifest = load_manifest(dataset)
    store = CheckpointStore(run_dir)
    version = store.latest()
    model = build_model(config, manifest)
    version.load_shared(model)
    parts = [version.load_partition("entity", p)[0] for p in range(manifest.num_partitions)]
    offsets = np.cumsum([0] + [len(p) for p in parts])
    table = torch.cat(parts)
    heads, tails, rels = [], [], []
    for i in range(manifest.num_partitions):
        for j in range(manifest.num_partitions):
            e = read_bucket(dataset, "test", i, j)
            heads.append(e.lhs.astype(np.int64) + offsets[i])
            tails.append(e.rhs.astype(np.int64) + offsets[j])
            rels.append(e.rel.astype(np.int64))
    h, t, r = (torch.from_numpy(np.concatenate(x)) for x in (heads, tails, rels))
    with torch.no_grad():
        scores = model.score_candidates("rhs", table[h], r, table)
        true = scores.gather(1, t.unsqueeze(1))
        ranks = 1 + (scores > true).sum(1).float()
    return float((1 / ranks).mean())


def test_training_learns_codex_s(codex2, tmp_path):
    config = config_from_dict(small_config(codex2, tmp_path / "run", training={"epochs": 3}))
    summary = train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    losses = [r["loss_per_edge"] for r in epochs]
    assert losses[0] > losses[1] > losses[2]
    assert all(r["edges_per_s"] > 0 and r["train_s"] > 0 for r in epochs)
    assert summary["epochs_completed"] == 3
    trained = tail_mrr(codex2, tmp_path / "run", config)
    # a run of 0 epochs keeps its seeded initial embeddings: the random baseline
    fresh = config_from_dict(small_config(codex2, tmp_path / "run0", training={"epochs": 0}))
    train(fresh)
    random_mrr = tail_mrr(codex2, tmp_path / "run0", fresh)
    assert trained > 0.1 and trained > 5 * random_mrr, (trained, random_mrr)


@pytest.mark.parametrize("chunks", [1, 3])
def test_resume_after_sigkill_trains_every_bucket_once_per_epoch(codex2, tmp_path, chunks):
    """With edge chunks: every chunk of every bucket once per epoch, each holding its share of the edges."""
    run_dir = tmp_path / "run"
    config_path = tmp_path / "config.json"  # JSON is YAML
    training = {"epochs": 4, "batch_size": 200, "num_edge_chunks": chunks}
    config_path.write_text(json.dumps(small_config(codex2, run_dir, training=training)))
    command = [sys.executable, "-m", "launcher.cli", "train", str(config_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count('"bucket"') >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = metrics.read_text().count('"type": "bucket"')
    assert killed_at < 16 * chunks
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr and (chunks == 1) != ("edge chunk" in done.stderr)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    buckets = [r for r in records if r["type"] == "bucket"]
    per_pass = Counter((r["epoch"], r["chunk"], tuple(r["bucket"])) for r in buckets)
    expected = {(e, c, (i, j)) for e in range(4) for c in range(chunks) for i in range(2) for j in range(2)}
    assert set(per_pass) == expected and set(per_pass.values()) == {1}
    manifest = load_manifest(codex2)
    for r in buckets:
        assert r["edges"] == EdgeChunk(r["chunk"], chunks).size(manifest.bucket_count("train", *r["bucket"]))
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [0, 1, 2, 3]
    version = CheckpointStore(run_dir).latest()
    assert version.meta["epoch"] == 4 and version.meta["finished_buckets"] == []
    for p in range(2):
        emb, ada = version.load_partition("entity", p)
        assert torch.isfinite(emb).all() and emb.shape[1] == 16 and (ada > 0).any()
    assert json.loads(done.stdout)["epochs_completed"] == 4


KILLED_WHILE_PUBLISHING = """
import os, signal, sys
from bigkg import checkpoint
from launcher.cli import main
publications, fsync_tree = [], checkpoint.fsync_tree
def fsync_or_die(path):
    publications.append(path)
    if len(publications) == int(sys.argv[2]):  # a bucket's version renamed into place, not yet named
        os.kill(os.getpid(), signal.SIGKILL)
    fsync_tree(path)
checkpoint.fsync_tree = fsync_or_die
main(["train", sys.argv[1]])
"""


def test_sigkill_while_a_version_is_published_loses_no_finished_bucket(codex2, tmp_path):
    run_dir = tmp_path / "run"
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(small_config(codex2, run_dir, training={"epochs": 2, "batch_size": 200})))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # publication 1 is the initial version, 2-4 the first three buckets'
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_PUBLISHING, str(config_path), "4"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    logged = (run_dir / "metrics.jsonl").read_text()
    assert logged.count('"type": "bucket"') == 3  # the third bucket's record, then its commit
    assert CheckpointStore(run_dir).latest().name == "v000002"  # its version (v000003) was not yet named
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "train", str(config_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr and "v000003 (epoch 1, 3 buckets done)" in done.stderr
    records = (run_dir / "metrics.jsonl").read_text()
    assert records.startswith(logged)  # nothing trained before the kill was trained again
    per_epoch = Counter((r["epoch"], tuple(r["bucket"])) for r in map(json.loads, records.splitlines()) if r["type"] == "bucket")
    assert set(per_epoch.values()) == {1} and len(per_epoch) == 8


# -- bad input ---------------------------------------------------------------------------
def test_missing_dataset_and_other_format_version(tiny, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        train(config_from_dict(small_config(tmp_path / "nowhere", tmp_path / "run")))
    manifest = json.loads((tiny / "manifest.json").read_text())
    (tiny / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DatasetError, match="format_version 99"):
        train(config_from_dict(small_config(tiny, tmp_path / "run")))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _drop_rhs(path: Path) -> None:
    import h5py

    with h5py.File(path, "a") as fh:
        del fh["rhs"]


def _edit_manifest(root: Path, **fields) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, **fields}))


@pytest.mark.parametrize("damage, where, words", [
    (lambda root: (root / "manifest.json").write_text("[1, 2]"), "manifest.json", "expected a JSON object"),
    (lambda root: (root / "manifest.json").write_bytes(b"\xff{"), "manifest.json", "is not valid JSON"),
    (lambda root: _edit_manifest(root, num_partitions="2"), "manifest.json", "num_partitions is '2'"),
    (lambda root: _edit_manifest(root, relations=[{"name": "r0", "lhs_type": "entity", "rhs_type": "user"}]),
     "manifest.json", "relation 'r0' has types 'entity', 'user'"),
    (lambda root: _truncate(root / "edges/train/bucket_1_0.h5"), "edges/train/bucket_1_0.h5", "cannot read bucket file"),
    (lambda root: _drop_rhs(root / "edges/train/bucket_1_0.h5"), "edges/train/bucket_1_0.h5", "'rhs' doesn't exist"),
    # A lost bucket file must not train silently on fewer edges than the manifest counts.
    (lambda root: (root / "edges/train/bucket_1_0.h5").unlink(), "edges/train/bucket_1_0.h5", "manifest counts 60 edges"),
])
def test_damaged_dataset_is_an_error_naming_the_file(tiny, tmp_path, damage, where, words):
    damage(tiny)
    with pytest.raises(DatasetError) as err:
        train(config_from_dict(small_config(tiny, tmp_path / "run", training={"epochs": 1, "bucket_order": "random"})))
    assert str(tiny / where) in str(err.value) and words in str(err.value)


def test_run_dir_that_cannot_be_made_is_an_error_naming_it(tiny, tmp_path):
    (tmp_path / "a-file").write_text("")
    for run_dir, problem in ((tmp_path / "a-file" / "run", "Not a directory"), (tmp_path / "a-file", "is not a directory")):
        with pytest.raises(BigKGError, match=f"run_dir {run_dir}: cannot create it: .*{problem}"):
            train(config_from_dict(small_config(tiny, run_dir)))


def test_dimension_change_on_resume_is_a_clear_error(tiny, tmp_path):
    train(config_from_dict(small_config(tiny, tmp_path / "run", training={"epochs": 1})))
    with pytest.raises(TrainingError, match="model.dim=16.*32.*--fresh"):
        train(config_from_dict(small_config(tiny, tmp_path / "run", model={"dim": 32})))
    # --fresh starts afresh with the new dimension
    summary = train(config_from_dict(small_config(tiny, tmp_path / "run", model={"dim": 32})), fresh=True)
    assert summary["epochs_completed"] == 2
    assert CheckpointStore(tmp_path / "run").latest().load_partition("entity", 0)[0].shape == (20, 32)


def test_bias_trains_its_first_coordinate_and_a_resume_without_it_is_refused(tiny, tmp_path):
    run = tmp_path / "run"
    train(config_from_dict(small_config(tiny, run, model={"bias": True, "operator": "none"}, training={"epochs": 1})))
    emb, _ = CheckpointStore(run).latest().load_partition("entity", 0)
    assert emb[:, 0].std() > 0.01  # rows start at init_scale 1e-3: coordinate 0 is trained, not left out
    with pytest.raises(TrainingError, match="model.bias"):
        train(config_from_dict(small_config(tiny, run, model={"operator": "none"})))


def test_a_full_disk_while_checkpointing_stops_with_the_version_named_and_the_run_resumes(tiny, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    config = config_from_dict(small_config(tiny, run_dir, training={"epochs": 2}))
    writes = 0
    real_write = checkpoint.write_partition_file

    def fill_the_disk(path, state):
        nonlocal writes
        writes += 1
        if writes == 7:  # some buckets into the run
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, state)

    monkeypatch.setattr(checkpoint, "write_partition_file", fill_the_disk)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*v0000\d\d: .*No space left on device"):
        train(config, fresh=True)
    store = CheckpointStore(run_dir)
    before = store.latest()
    assert before is not None and not list(run_dir.glob("checkpoints/*.tmp-*"))
    before.load_partition("entity", 0)  # the version LATEST names is whole
    monkeypatch.undo()
    summary = train(config)  # space freed: the run resumes from that version and ends
    assert summary["epochs_completed"] == 2 and summary["edges_trained_this_run"] > 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(config_from_dict(small_config(tiny, run_dir, training={"epochs": 1})))
    good = CheckpointStore(run_dir).latest()
    good_emb = good.load_partition("entity", 0)[0]
    config_path = tmp_path / "c.yaml"
    config_path.write_text(json.dumps(small_config(tiny, run_dir)))
    status = cli_main(["train", str(config_path), "--set", "training.lr=1e38", "--set", "training.batch_size=20"])
    err = capsys.readouterr().err
    assert status == 2 and "loss became" in err and good.name in err
    latest = CheckpointStore(run_dir).latest()
    assert latest.name == good.name
    assert torch.equal(latest.load_partition("entity", 0)[0], good_emb)


HOLDER = """
import json, sys
from bigkg.config import config_from_dict
from bigkg.errors import BigKGError
from bigkg.training.trainer import Trainer
trainer = Trainer(config_from_dict(json.loads(sys.argv[1])))
print("holding", flush=True)
sys.stdin.read()  # until the test kills this process
"""


def test_a_second_trainer_on_a_run_dir_in_use_is_refused_until_the_first_dies(tiny, tmp_path):
    config = small_config(tiny, tmp_path / "run", training={"epochs": 1})
    checkpoints = tmp_path / "run" / "checkpoints"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(config)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        versions = sorted(p.name for p in checkpoints.iterdir())
        with pytest.raises(RunDirInUse, match=f"run_dir {tmp_path / 'run'} is being trained by pid {holder.pid}"):
            train(config_from_dict(config), fresh=True)
        assert sorted(p.name for p in checkpoints.iterdir()) == versions  # --fresh deleted nothing
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait()
    assert train(config_from_dict(config), fresh=True)["epochs_completed"] == 1


def test_cli_config_typo_and_json_summary(tiny, tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(json.dumps(small_config(tiny, tmp_path / "run")))
    assert cli_main(["train", str(config_path), "--set", "training.epohcs=3"]) == 2
    assert "training.epohcs" in capsys.readouterr().err
    assert cli_main(["train", str(config_path), "--json", str(tmp_path / "s.json"), "--set", "training.epochs=1"]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["edges_per_s"] > 0


# -- CPU threads -------------------------------------------------------------------------
THREADS_PROBE = """
import json, sys
import numba, torch
from bigkg.config import config_from_dict
from bigkg.errors import BigKGError
from bigkg.training.trainer import Trainer
def counts():
    return f"{numba.get_num_threads()},{torch.get_num_threads()}"
torch.get_num_threads()  # torch's count for this thread is fixed before the trainer sets it, as a large model's set-up does
with Trainer(config_from_dict(json.loads(sys.argv[1])), fresh=True) as trainer:
    pool = trainer.workers.pool
    print(counts(), pool.submit(counts).result() if pool else None)
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_training_threads_bound_numba_and_torch_in_every_training_thread(tiny, tmp_path, workers):
    """Both counts are per thread: they must be set in the thread that trains and in each
    worker. torch's must survive numba starting its OpenMP pool (the same libgomp), which
    resets the calling thread's OpenMP count to NUMBA_NUM_THREADS."""
    config = small_config(tiny, tmp_path / "run", training={"threads": 1, "workers": workers})
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}  # the defaults on 2 cores
    done = subprocess.run([sys.executable, "-c", THREADS_PROBE, json.dumps(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    in_main, in_pool = done.stdout.split()
    assert in_main == "1,1"
    assert in_pool == ("1,1" if workers > 1 else "None")


def test_foreign_negatives_come_from_other_partitions_and_their_gradients_land_later(codex2, tmp_path):
    """With P=2 each side's foreign candidates are rows of the other partition, read from the
    checkpoint the bucket was loaded from; their gradients wait until that partition is
    loaded, and then change exactly those rows."""
    config = config_from_dict(small_config(codex2, tmp_path / "run", training={"epochs": 1, "foreign_negatives": 64}))
    train(config)
    with Trainer(config) as trainer:  # resumes the finished run
        trainer._load(Bucket(0, 0), WHOLE_BUCKET)
        assert set(trainer.foreign) == {("entity", 0)}
        sample = trainer.foreign[("entity", 0)]
        other = trainer.version.load_partition("entity", 1)[0]
        assert set(sample.origin) == {1} and sample.rows.shape == (64, 16)
        torch.testing.assert_close(sample.rows, other[sample.origin[1]], rtol=0, atol=0)

        sample.grad += 1.0  # as if the bucket's batches had pushed on every drawn row
        trainer.deferred.add(sample)
        trainer._load(Bucket(1, 1), WHOLE_BUCKET)
        moved = (trainer.held[("entity", 1)].embeddings != other).any(1)
    assert torch.equal(moved.nonzero().flatten(), torch.unique(sample.origin[1]))


def test_waiting_foreign_gradients_are_checkpointed_and_applied_after_a_resume(codex2, tmp_path):
    """The last buckets' foreign-row gradients still wait when a run stops; the checkpoint
    keeps them, and a resumed trainer applies them when their partition is loaded."""
    config = config_from_dict(small_config(codex2, tmp_path / "run", training={"epochs": 1, "foreign_negatives": 64}))
    train(config)
    version = CheckpointStore(config.run_dir).latest()
    waiting = version.shared_state()["deferred"]
    assert waiting, "the last bucket drew foreign rows, whose gradients must still wait"
    entity_type, part, ids, grads = waiting[0]
    assert ids.shape[0] == grads.shape[0] > 0 and torch.equal(ids, torch.unique(ids))  # merged per row

    table, adagrad = version.load_partition(entity_type, part)
    expected_table, expected_adagrad = table.clone(), adagrad.clone()
    RowAdagrad(config.training.lr).step(expected_table, expected_adagrad, [ids], [grads])
    with Trainer(config) as trainer:  # resumes the finished run
        trainer._load(Bucket(part, part), WHOLE_BUCKET)
        held = trainer.held[(entity_type, part)]
    torch.testing.assert_close(held.embeddings, expected_table, rtol=0, atol=0)
    torch.testing.assert_close(held.adagrad, expected_adagrad, rtol=0, atol=0)
    assert not torch.equal(held.embeddings, table)


def test_a_foreign_pool_is_read_per_bucket_and_drawn_from_per_batch(codex2, tmp_path):
    config = config_from_dict(small_config(codex2, tmp_path / "run", training={
        "epochs": 1, "foreign_negatives": 16, "foreign_pool": 200}))
    train(config)
    with Trainer(config) as trainer:
        trainer._load(Bucket(1, 1), WHOLE_BUCKET)
        sample = trainer.foreign[("entity", 1)]
    assert sample.rows.shape == (200, 16) and sample.per_batch == 16
    picks, leaf = sample.draw(torch.Generator().manual_seed(0))
    torch.testing.assert_close(leaf, sample.rows[picks], rtol=0, atol=0)


# -- per-relation weights ------------------------------------------------------------------
def test_relation_weights_multiply_the_edges_own_weights(tmp_path):
    rel = np.array([0, 1, 2, 1], dtype=np.int32)
    edges = BucketEdges(np.arange(4, dtype=np.int32), np.arange(4, dtype=np.int32), rel, np.array([1, 2, 3, 4], np.float32))
    write_bucket(tmp_path, "train", 0, 0, edges)
    manifest = Manifest(1, [EntityType("entity", [4])], [Relation(f"r{k}", "entity", "entity") for k in range(3)],
                        {"train": {bucket_key(0, 0): 4}}, has_weights=True)
    config = config_from_dict(small_config(tmp_path, tmp_path / "run", training={"relation_weights": {"r1": 0.5, "r2": 3}}))
    loader = BucketLoader(tmp_path, manifest, pin_memory=False, background=False,
                          relation_weights=build_relation_weights(config, manifest))
    (group,) = loader.load(Bucket(0, 0), WHOLE_BUCKET, None, frozenset(all_partition_keys(manifest))).edges
    assert group.weight.tolist() == [1.0, 1.0, 9.0, 2.0]


def test_a_relation_of_weight_zero_moves_none_of_its_entities(tmp_path):
    """Items occur only in 'likes' and 'similar' edges, users also in 'follows' ones: weighing
    the first two 0 leaves every item where the initial vectors put it, and users not."""
    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "data", TYPES, RELS, {"train": random_triples(rng, 300)}, num_partitions=2)

    def trained(name: str, weights: dict[str, float]) -> dict[str, list[torch.Tensor]]:
        run = tmp_path / name
        train(config_from_dict(small_config(tmp_path / "data", run, model={"operator": "none"},
                                            training={"epochs": 1, "relation_weights": weights})))
        version = CheckpointStore(run).latest()
        return {t: [version.load_partition(t, p)[0] for p in range(2)] for t in TYPES}

    untrained = trained("none", {"likes": 0, "similar": 0, "follows": 0})
    follows_only = trained("follows", {"likes": 0, "similar": 0})
    everything = trained("all", {})
    assert all(torch.equal(a, b) for a, b in zip(untrained["item"], follows_only["item"]))
    assert not any(torch.equal(a, b) for a, b in zip(untrained["user"], follows_only["user"]))
    assert not any(torch.equal(a, b) for a, b in zip(untrained["item"], everything["item"]))


@pytest.mark.parametrize("operator", ["none", "complex_diagonal"])  # closed-form softmax step, autograd
def test_a_relation_trained_on_heads_only_never_moves_its_tail_negatives(tmp_path, operator):
    """Items 10-19 occur in no edge, so only tail-side uniform negatives of 'likes' reach them:
    with relation_negative_sides {likes: heads} they stay where the initial vectors put them,
    and with both sides they move."""
    rng = np.random.default_rng(0)
    likes = np.stack([rng.integers(0, 12, 300), np.zeros(300, dtype=int), rng.integers(0, 10, 300)], 1)
    write_dataset(tmp_path / "data", TYPES, RELS, {"train": likes}, num_partitions=1)

    def items(name: str, **training) -> torch.Tensor:
        run = tmp_path / name
        train(config_from_dict(small_config(tmp_path / "data", run, model={"operator": operator},
                                            training={"epochs": 1, "num_uniform_negatives": 20, **training})))
        return CheckpointStore(run).latest().load_partition("item", 0)[0]

    initial = items("initial", relation_weights={"likes": 0})
    heads_only = items("heads", relation_negative_sides={"likes": "heads"})
    both = items("both")
    assert torch.equal(heads_only[10:], initial[10:]) and not torch.equal(heads_only[:10], initial[:10])
    assert not torch.equal(both[10:], initial[10:])


def test_a_relation_with_all_negatives_moves_items_no_edge_names(tmp_path):
    """Items 10-19 occur in no edge, and without uniform negatives only a relation scored
    against every row of the partition reaches them: with relation_negatives {likes: all}
    they move; without it they stay ('follows' edges are scored in chunks either way)."""
    rng = np.random.default_rng(0)
    likes = np.stack([rng.integers(0, 12, 300), np.zeros(300, dtype=int), rng.integers(0, 10, 300)], 1)
    follows = np.stack([rng.integers(0, 12, 100), np.full(100, RELS.index(("follows", "user", "user"))),
                        rng.integers(0, 12, 100)], 1)
    write_dataset(tmp_path / "data", TYPES, RELS, {"train": np.concatenate([likes, follows])}, num_partitions=1)

    def tables(name: str, **training) -> dict[str, torch.Tensor]:
        run = tmp_path / name
        train(config_from_dict(small_config(tmp_path / "data", run, model={"operator": "none"},
                                            training={"epochs": 1, "num_uniform_negatives": 0, **training})))
        return {t: CheckpointStore(run).latest().load_partition(t, 0)[0] for t in ("user", "item")}

    initial = tables("initial", lr=0.0)
    batched = tables("batched")
    all_likes = tables("all", relation_negatives={"likes": "all"})
    assert torch.equal(batched["item"][10:], initial["item"][10:])
    assert not torch.equal(all_likes["item"][10:], initial["item"][10:])


@pytest.mark.parametrize("key, good, bad, allowed", [
    ("relation_negative_sides", "tails", "lhs", "both"), ("relation_negatives", "all", "uniform", "batched"),
])
def test_per_relation_negative_options_name_a_missing_relation_or_a_bad_value(tiny, tmp_path, key, good, bad, allowed):
    with pytest.raises(ConfigError, match=f"training.{key}.*'likes'"):
        train(config_from_dict(small_config(tiny, tmp_path / "run", training={key: {"likes": good}})))
    with pytest.raises(ConfigError, match=f"training.{key}.r1: '{bad}' is not allowed; choose one of {allowed}"):
        config_from_dict(small_config(tiny, tmp_path / "run", training={key: {"r1": bad}}))


def test_relation_weights_name_a_missing_relation_or_a_negative_weight(tiny, tmp_path):
    with pytest.raises(ConfigError, match="training.relation_weights.*'likes'"):
        train(config_from_dict(small_config(tiny, tmp_path / "run", training={"relation_weights": {"likes": 2}})))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="training.relation_weights.r1: -1.0 is below the minimum 0"):
        config_from_dict(small_config(tiny, tmp_path / "run", training={"relation_weights": {"r1": -1}}))


# -- epoch snapshots -----------------------------------------------------------------------
def test_snapshots_keep_every_nth_epoch_as_a_run_directory_of_its_own(tiny, tmp_path):
    """checkpoint.snapshot_every 2 over 4 epochs: epochs 2 and 4 stay readable as runs (eval,
    like every reader of a run, takes the snapshot's directory) after the run pruned their
    versions; a stale temporary of a killed snapshot is cleared."""
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    (run / "snapshots" / f"epoch_2{checkpoint.TMP_MARKER}999-dead").mkdir()
    config = config_from_dict(small_config(tiny, run, training={"epochs": 4}, checkpoint={"snapshot_every": 2}))
    train(config)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch_2", "epoch_4"]
    final = CheckpointStore(run).latest()
    epoch_ends = {}
    for k in (2, 4):
        snapshot = CheckpointStore(run / "snapshots" / f"epoch_{k}").latest()
        assert snapshot.meta["progress"]["epoch"] == k and snapshot.meta["progress"]["finished"] == []
        own = load_config(run / "snapshots" / f"epoch_{k}" / "config.yaml")
        assert own == dataclasses.replace(config, run_dir=str(run / "snapshots" / f"epoch_{k}"))
        epoch_ends[k] = snapshot.load_partition("entity", 1)[0]
        metrics = evaluate(own, "train")  # the snapshot's own config reads the snapshot
        assert metrics["checkpoint"] == snapshot.name and metrics["count"] == 2 * 240
    assert not (run / "checkpoints" / CheckpointStore(run / "snapshots" / "epoch_2").latest().name).exists()
    assert torch.equal(epoch_ends[4], final.load_partition("entity", 1)[0])
    assert not torch.equal(epoch_ends[2], epoch_ends[4])


def test_a_snapshot_missed_by_a_killed_run_is_taken_when_it_resumes(tiny, tmp_path):
    """The end of epoch 2 is committed but its snapshot never made (as if killed between the
    two): the resumed run makes it from that version before training epoch 3."""
    run = tmp_path / "run"
    train(config_from_dict(small_config(tiny, run, training={"epochs": 2})))
    epoch_end = CheckpointStore(run).latest()
    train(config_from_dict(small_config(tiny, run, training={"epochs": 3}, checkpoint={"snapshot_every": 2})))
    snapshot = CheckpointStore(run / "snapshots" / "epoch_2").latest()
    assert snapshot.name == epoch_end.name and snapshot.meta["progress"]["epoch"] == 2
    assert not (run / "snapshots" / "epoch_3").exists()


def test_fresh_discards_the_snapshots_of_the_run_it_starts_over(tiny, tmp_path):
    """--fresh discards the earlier run's snapshots with its checkpoints: the new run's epoch
    ends are snapshotted (an old epoch_<k> would otherwise stand in for them, and an epoch the
    new run never reaches would keep the old weights)."""
    run = tmp_path / "run"
    train(config_from_dict(small_config(tiny, run, training={"epochs": 2}, checkpoint={"snapshot_every": 1})))
    train(config_from_dict(small_config(tiny, run, seed=5, training={"epochs": 1}, checkpoint={"snapshot_every": 1})),
          fresh=True)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch_1"]
    snapshot = CheckpointStore(run / "snapshots" / "epoch_1").latest()
    final = CheckpointStore(run).latest()
    assert torch.equal(snapshot.load_partition("entity", 0)[0], final.load_partition("entity", 0)[0])
