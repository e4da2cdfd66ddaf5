"""Checkpoint versions: hard-linked unchanged partitions, the LATEST pointer, pruning, loading,
background publication and the recovery of a version a killed writer did not name."""

import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from bigkg import checkpoint
from bigkg.atomic import current_boot_id
from bigkg.checkpoint import CheckpointError, CheckpointStore, PartitionState, read_partition_file, read_partition_rows, write_partition_file
from bigkg.config import config_from_dict
from bigkg.format import EntityType, Manifest, Relation
from bigkg.model import build_model

KEYS = [("e", 0), ("e", 1)]
REPO = Path(__file__).resolve().parents[1]


def state(value: float) -> PartitionState:
    return PartitionState(torch.full((3, 4), value), torch.full((3,), value))


def test_versions_link_unchanged_partitions_and_prune(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.latest() is None
    v0 = store.write({"epoch": 0}, {"model": {}}, {k: state(i) for i, k in enumerate(KEYS)}, KEYS, base=None, keep_versions=2)
    v1 = store.write({"epoch": 1}, {"model": {}}, {KEYS[1]: state(7)}, KEYS, base=v0, keep_versions=2)
    assert store.latest().name == v1.name == "v000001"
    # partition 0 unchanged: the same inode, not a copy
    assert os.stat(v1.partition_path("e", 0)).st_ino == os.stat(v0.partition_path("e", 0)).st_ino
    emb, ada = v1.load_partition("e", 1)
    assert torch.equal(emb, torch.full((3, 4), 7.0)) and torch.equal(ada, torch.full((3,), 7.0))
    mapped, mapped_ada = v1.load_partition("e", 1, mmap=True)  # what a loader that pins reads
    assert torch.equal(mapped, emb) and torch.equal(mapped_ada, ada)
    mapped += 1  # copy-on-write: the version stays as written
    assert torch.equal(v1.load_partition("e", 1)[0], emb)
    assert v1.meta["epoch"] == 1
    v2 = store.write({"epoch": 2}, {"model": {}}, {}, KEYS, base=v1, keep_versions=2)
    assert [p.name for p in store.versions()] == ["v000001", "v000002"]
    # the pruned version's inode survives through the link in v2
    assert torch.equal(v2.load_partition("e", 0)[0], torch.zeros(3, 4))


def test_partition_files_skip_zip_checksums_and_leave_the_setting_alone(tmp_path):
    path = tmp_path / "part.pt"
    emb = torch.randn(50, 8)
    write_partition_file(path, PartitionState(emb, torch.arange(50.0)))
    loaded_emb, loaded_ada = read_partition_file(path)
    assert torch.equal(loaded_emb, emb) and torch.equal(loaded_ada, torch.arange(50.0))
    assert torch.equal(read_partition_rows(path, torch.tensor([3, 41])), emb[[3, 41]])
    # the tensor records carry no CRC-32 (it would be a pass over every byte of each commit)
    with zipfile.ZipFile(path) as archive:
        data = [info for info in archive.infolist() if "/data/" in info.filename]
    assert len(data) == 2 and all(info.CRC == 0 for info in data)
    # torch.save elsewhere in the process keeps its checksums
    assert torch.serialization.get_crc32_options() is True
    torch.save(emb, tmp_path / "other.pt")
    with zipfile.ZipFile(tmp_path / "other.pt") as archive:
        assert archive.testzip() is None


def test_stale_temporary_is_ignored_and_removed(tmp_path):
    store = CheckpointStore(tmp_path)
    v0 = store.write({}, {"model": {}}, {k: state(1) for k in KEYS}, KEYS, base=None, keep_versions=3)
    stale = store.root / "v000001.tmp-999999999-abcd"
    (stale / "partitions").mkdir(parents=True)
    assert store.latest().name == v0.name
    store.write({}, {"model": {}}, {}, KEYS, base=v0, keep_versions=3)
    assert not stale.exists()
    assert store.latest().name == "v000001"


def test_shared_state_round_trip_and_mismatch(tmp_path):
    manifest = Manifest(1, [EntityType("e", [3])], [Relation("r", "e", "e")], {})
    model = build_model(config_from_dict({"model": {"dim": 4, "operator": "diagonal"}}), manifest)
    with torch.no_grad():
        model.operators[0].diagonal.fill_(3.0)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    store = CheckpointStore(tmp_path)
    v = store.write({}, {"model": model.state_dict(), "optimizer": opt.state_dict()}, {KEYS[0]: state(0)}, KEYS[:1], base=None, keep_versions=1)
    fresh = build_model(config_from_dict({"model": {"dim": 4, "operator": "diagonal"}}), manifest)
    v.load_shared(fresh, torch.optim.Adagrad(fresh.parameters(), lr=0.1))
    assert torch.equal(fresh.operators[0].diagonal, torch.full((1, 4), 3.0))
    other = build_model(config_from_dict({"model": {"dim": 8, "operator": "diagonal"}}), manifest)
    with pytest.raises(CheckpointError, match="does not fit"):
        v.load_shared(other)


def test_bad_pointer_and_format(tmp_path):
    store = CheckpointStore(tmp_path)
    v = store.write({}, {"model": {}}, {KEYS[0]: state(0)}, KEYS[:1], base=None, keep_versions=1)
    meta = json.loads((v.path / "meta.json").read_text())
    (v.path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format 99"):
        store.latest()
    (store.root / "LATEST").write_text("v000042\n")
    with pytest.raises(CheckpointError, match="v000042"):
        store.latest()


def test_damaged_pointer_and_meta_are_errors_naming_the_file(tmp_path):
    store = CheckpointStore(tmp_path)
    v = store.write({}, {"model": {}}, {KEYS[0]: state(0)}, KEYS[:1], base=None, keep_versions=1)
    for text, words in [(b"[1, 2]", "meta.json is not a JSON object"), (b"\xff{", "is unreadable: 'utf-8' codec")]:
        (v.path / "meta.json").write_bytes(text)
        with pytest.raises(CheckpointError, match=words):
            store.latest()
    (store.root / "LATEST").write_bytes(b"\xff\xfe\n")
    with pytest.raises(CheckpointError, match=f"{store.root / 'LATEST'} names .*not a complete checkpoint version"):
        store.latest()


@pytest.mark.parametrize("content, words", [
    (b"", "cannot read {path}: "),
    (b"hello\n", "cannot read {path}: "),
    (None, "{path} is not a partition file: it lacks the embeddings"),  # a torch file of other tensors
])
def test_damaged_partition_file_is_an_error_naming_it(tmp_path, content, words):
    path = tmp_path / "part_0.pt"
    if content is None:
        torch.save({"x": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    for read in (read_partition_file, lambda p: read_partition_rows(p, torch.tensor([0]))):
        with pytest.raises(CheckpointError, match=words.format(path=path)):
            read(path)


def test_pinned_versions_survive_pruning(tmp_path):
    store = CheckpointStore(tmp_path)
    v0 = store.write({}, {"model": {}}, {k: state(0) for k in KEYS}, KEYS, base=None, keep_versions=1)
    v1 = store.write({}, {"model": {}}, {KEYS[0]: state(1)}, KEYS, base=v0, keep_versions=1, pinned={v0.name})
    v2 = store.write({}, {"model": {}}, {KEYS[0]: state(2)}, KEYS, base=v1, keep_versions=1, pinned={v0.name})
    # keep_versions=1 keeps only the newest, plus the pinned one
    assert [p.name for p in store.versions()] == [v0.name, v2.name]
    assert torch.equal(v0.load_partition("e", 0)[0], torch.zeros(3, 4))
    # no longer pinned: pruned by the next write
    store.write({}, {"model": {}}, {}, KEYS, base=v2, keep_versions=1)
    assert [p.name for p in store.versions()] == ["v000003"]


def test_background_publication_is_waited_for_by_readers(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    v0 = store.write({}, {"model": {}}, {k: state(0) for k in KEYS}, KEYS, base=None, keep_versions=3)
    release = threading.Event()
    real_fsync_tree = checkpoint.fsync_tree
    monkeypatch.setattr(checkpoint, "fsync_tree", lambda path: (release.wait(), real_fsync_tree(path)))
    v1 = store.write({}, {"model": {}}, {KEYS[0]: state(1)}, KEYS, base=v0, keep_versions=3, background=True)
    # renamed into place and readable at once, but not named until it is durable
    assert torch.equal(v1.load_partition("e", 0)[0], torch.ones(3, 4))
    assert (store.root / "LATEST").read_text().strip() == v0.name
    threading.Timer(0.2, release.set).start()
    assert store.latest().name == v1.name  # waits for the publication
    assert (store.root / "LATEST").read_text().strip() == v1.name


@pytest.mark.skipif(current_boot_id() is None, reason="background publication needs Linux's boot id")
def test_background_writes_do_not_wait_and_skip_superseded_versions(tmp_path, monkeypatch):
    """Versions built while one is being published are not held up by it; of those, only
    the newest is then published (fsynced, named), and pruning after each publication
    keeps the versions newer than it."""
    store = CheckpointStore(tmp_path)
    v0 = store.write({}, {"model": {}}, {k: state(0) for k in KEYS}, KEYS, base=None, keep_versions=2)
    entered, release, synced = threading.Event(), threading.Event(), []
    real_fsync_tree = checkpoint.fsync_tree
    monkeypatch.setattr(checkpoint, "fsync_tree",
                        lambda path: (synced.append(path.name), entered.set(), release.wait(), real_fsync_tree(path)))
    fallback = threading.Timer(30, release.set)  # should the writes wait after all: no hang, a failure below
    fallback.start()
    v1 = store.write({}, {"model": {}}, {KEYS[0]: state(1)}, KEYS, base=v0, keep_versions=2, background=True)
    entered.wait()  # v1's publication has started
    v2 = store.write({}, {"model": {}}, {KEYS[1]: state(2)}, KEYS, base=v1, keep_versions=2, background=True)
    v3 = store.write({}, {"model": {}}, {KEYS[0]: state(3)}, KEYS, base=v2, keep_versions=2, background=True)
    assert not release.is_set()  # three versions built while the first was still being published
    assert (store.root / "LATEST").read_text().strip() == v0.name
    release.set()
    fallback.cancel()
    assert store.latest().name == v3.name
    assert synced == [v1.name, v3.name]  # v2, superseded while it waited, was skipped
    assert [p.name for p in store.versions()] == [v2.name, v3.name]
    assert torch.equal(v3.load_partition("e", 0)[0], torch.full((3, 4), 3.0))
    assert torch.equal(v3.load_partition("e", 1)[0], torch.full((3, 4), 2.0))  # linked from the skipped v2


def test_files_synced_with_a_version_are_fsynced_before_it_is_named(tmp_path, monkeypatch):
    """sync_with (the metrics log a version counts lines of) is made durable first, then the
    version's tree, and only then does LATEST name it."""
    store = CheckpointStore(tmp_path)
    log_file = tmp_path / "metrics.jsonl"
    log_file.write_text("{}\n")
    events = []
    real_fsync_path, real_fsync_tree = checkpoint.fsync_path, checkpoint.fsync_tree
    monkeypatch.setattr(checkpoint, "fsync_path", lambda path: (events.append(("path", Path(path).name)), real_fsync_path(path)))
    monkeypatch.setattr(checkpoint, "fsync_tree", lambda path: (events.append(("tree", path.name)), real_fsync_tree(path)))
    real_write_text_atomic = checkpoint.write_text_atomic
    monkeypatch.setattr(checkpoint, "write_text_atomic",
                        lambda path, text: (events.append(("named", text.strip())), real_write_text_atomic(path, text)))
    v0 = store.write({}, {"model": {}}, {k: state(0) for k in KEYS}, KEYS, base=None, keep_versions=2,
                     background=True, sync_with=[log_file])
    store.flush()
    assert events[:2] == [("path", "metrics.jsonl"), ("tree", v0.name)]
    assert events[-1] == ("named", v0.name)


def test_background_publication_error_reaches_the_writer(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    v0 = store.write({}, {"model": {}}, {k: state(0) for k in KEYS}, KEYS, base=None, keep_versions=3)

    def disk_full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "fsync_tree", disk_full)
    store.write({}, {"model": {}}, {}, KEYS, base=v0, keep_versions=3, background=True)
    with pytest.raises(OSError, match="No space left"):
        store.flush()
    monkeypatch.undo()
    assert store.latest().name == v0.name


WRITE_THEN_DIE = """
import os, signal, sys, torch
from bigkg import checkpoint
from bigkg.checkpoint import CheckpointStore, PartitionState
keys = [("e", 0), ("e", 1)]
store = CheckpointStore(sys.argv[1])
v0 = store.write({}, {"model": {}}, {k: PartitionState(torch.zeros(3, 4), torch.zeros(3)) for k in keys}, keys,
                 base=None, keep_versions=3)
checkpoint.fsync_tree = lambda path: os.kill(os.getpid(), signal.SIGKILL)  # killed while publishing
store.write({}, {"model": {}}, {keys[1]: PartitionState(torch.full((3, 4), 5.0), torch.ones(3))}, keys,
            base=v0, keep_versions=3, background=True)
store.flush()
"""


def killed_while_publishing(run_dir) -> CheckpointStore:
    """A real process that committed v0, built v1 and was SIGKILLed before naming it."""
    done = subprocess.run([sys.executable, "-c", WRITE_THEN_DIE, str(run_dir)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    store = CheckpointStore(run_dir)
    assert store.latest().name == "v000000" and (store.root / "v000001").is_dir()
    return store


@pytest.mark.skipif(current_boot_id() is None, reason="needs Linux's boot id")
def test_recover_publishes_a_killed_writers_version_of_this_boot(tmp_path):
    store = killed_while_publishing(tmp_path)
    store.recover()
    latest = store.latest()
    assert latest.name == "v000001"
    assert torch.equal(latest.load_partition("e", 1)[0], torch.full((3, 4), 5.0))
    assert torch.equal(latest.load_partition("e", 0)[0], torch.zeros(3, 4))


@pytest.mark.skipif(current_boot_id() is None, reason="needs Linux's boot id")
@pytest.mark.parametrize("writer", ["another boot", "live writer"])
def test_recover_leaves_unsafe_versions_unnamed(tmp_path, writer):
    store = killed_while_publishing(tmp_path)
    meta_path = store.root / "v000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            if writer == "another boot":  # possibly cut short on disk by a crash: removed
                meta["writer"]["boot_id"] = "0" * 32
            else:  # still publishing it: left alone
                meta["writer"]["pid"] = other.pid
            meta_path.write_text(json.dumps(meta))
            store.recover()
        finally:
            other.kill()
    assert store.latest().name == "v000000"
    assert (store.root / "v000001").is_dir() == (writer == "live writer")
