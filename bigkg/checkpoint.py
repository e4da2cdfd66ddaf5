"""Versioned, crash-safe checkpoints of a run.

Layout under ``run_dir/checkpoints``::

    LATEST                          name of the last complete version
    v000007/                        never modified once complete
        meta.json                   format version, epoch, finished buckets, dims, trainer state
        shared.pt                   {"model": KGModel state_dict, "optimizer": dense optimizer state,
                                     "deferred": foreign-row gradients waiting for their partition}
        partitions/<type>/part_<i>.pt   {"embeddings": [n, d] float32, "adagrad": [n] float32}

A version is built under a temporary name: the partitions that changed are
written, the others are hard-linked from the base version (no copy); it is
renamed into place, then *published*: its tree is fsynced and LATEST is
replaced atomically. LATEST names the newest complete and durable version; a
version directory newer than LATEST is one whose publication did not finish.
After a version is published, the versions before it beyond ``keep_versions``
are removed, except the ``pinned`` ones (the best-validated version, which the
end of training may restore).

Publishing can run in a background thread (``write(background=True)``) while
the trainer goes on with the next bucket: the fsyncs wait on the disk, and
after every bucket they were ~15% of a CPU run's wall time. Writes do not wait
for it: a version built while another is being published waits its turn, and
one superseded before its turn is never fsynced or named (skipped), since the
newer version's fsync covers every file it holds, hard links included. So a
disk slower than the buckets costs fewer durable versions, not stalled
training; skipped versions are pruned by later publications, usually while
still dirty in the page cache, and are then never written back. ``latest`` and ``flush`` wait for the
newest version. A process killed before its last version is named loses
nothing: the version is whole in the kernel's page cache, which outlives the
process, so ``recover`` publishes it, provided the machine has not restarted
since (its ``meta.json`` records the boot it was written in). After a machine
crash such a version may be incomplete on disk, so ``recover`` removes it: the
run resumes from LATEST.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

import torch
from torch import Tensor, nn

from bigkg.atomic import (
    TMP_MARKER, atomic_directory, current_boot_id, fsync_path, fsync_tree, other_process_alive, temporary_sibling,
    write_text_atomic,
)
from bigkg.errors import BigKGError

CHECKPOINT_FORMAT = 1
LATEST_NAME = "LATEST"
_VERSION_RE = re.compile(r"^v(\d{6,})$")

PartitionKey = tuple[str, int]


class CheckpointError(BigKGError):
    """A checkpoint that is missing, incomplete, or does not fit the run's config."""


@dataclass
class PartitionState:
    """One partition's embeddings and row-wise Adagrad state."""

    embeddings: Tensor
    adagrad: Tensor


# A partition held for training, with its key: one side (lhs or rhs) of a bucket.
Side = tuple[PartitionKey, PartitionState]


def partition_relpath(entity_type: str, part: int) -> Path:
    return Path("partitions") / entity_type / f"part_{part}.pt"


def read_tensor_file(path: Path, *, mmap: bool = False) -> Any:
    """A torch file of tensors (no pickled code), loaded to the CPU; errors name the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # a damaged file fails anywhere in the unpickler: EOFError, KeyError, ...
        raise CheckpointError(f"cannot read {path}: damaged, not a torch file ({type(exc).__name__}: {exc})") from exc


_CRC32_SETTING = threading.Lock()


@contextlib.contextmanager
def _without_crc32() -> Iterator[None]:
    """torch.save without its per-record CRC-32 (process-wide, so changed under a lock).

    The checksum is a pass over every byte, three quarters of a partition write's
    cost (13.7 → 3.4 ms for 10 MB). It buys nothing here: whole files are
    guaranteed by the temporary name, fsync and rename, and torch.load does not
    verify it.
    """
    with _CRC32_SETTING:
        before = torch.serialization.get_crc32_options()
        torch.serialization.set_crc32_options(False)
        try:
            yield
        finally:
            torch.serialization.set_crc32_options(before)


def write_partition_file(path: Path, state: PartitionState) -> None:
    with _without_crc32():
        torch.save({"embeddings": state.embeddings, "adagrad": state.adagrad}, path)


def read_partition_file(path: Path, mmap: bool = False) -> tuple[Tensor, Tensor]:
    """(embeddings [n, d], adagrad [n]) stored in one partition file; with ``mmap``,
    views of the file's pages (copy-on-write) for a caller that copies them anyway."""
    data = read_tensor_file(path, mmap=mmap)
    if not (isinstance(data, dict) and all(isinstance(data.get(k), Tensor) for k in ("embeddings", "adagrad"))):
        raise CheckpointError(f"{path} is not a partition file: it lacks the embeddings and adagrad tensors")
    return data["embeddings"], data["adagrad"]


def read_partition_rows(path: Path, rows: Tensor) -> Tensor:
    """Embeddings of some rows of a partition file, memory-mapped: only the pages holding
    those rows are read."""
    data = read_tensor_file(path, mmap=True)
    if not (isinstance(data, dict) and isinstance(data.get("embeddings"), Tensor)):
        raise CheckpointError(f"{path} is not a partition file: it lacks the embeddings tensor")
    return data["embeddings"].index_select(0, rows)


class CheckpointVersion:
    """A complete, read-only checkpoint version."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.name
        meta_path = self.path / "meta.json"
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_bytes())
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            raise CheckpointError(f"checkpoint {self.path} is unreadable: {exc}") from exc
        if not isinstance(self.meta, dict):
            raise CheckpointError(f"{meta_path} is not a JSON object")
        if self.meta.get("format_version") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{meta_path} has checkpoint format {self.meta.get('format_version')!r}; "
                f"this bigkg reads format {CHECKPOINT_FORMAT}"
            )

    @property
    def number(self) -> int:
        return int(self.name[1:])

    def partition_path(self, entity_type: str, part: int) -> Path:
        return self.path / partition_relpath(entity_type, part)

    def load_partition(self, entity_type: str, part: int, mmap: bool = False) -> tuple[Tensor, Tensor]:
        """(embeddings [n, d], adagrad [n]) of one partition, on the CPU (``mmap``: see
        ``read_partition_file``)."""
        return read_partition_file(self.partition_path(entity_type, part), mmap)

    def shared_state(self) -> dict[str, Any]:
        return read_tensor_file(self.path / "shared.pt")

    def load_shared(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        """Load the model's shared parameters (and the dense optimizer state when given);
        returns the whole shared state."""
        state = self.shared_state()
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path / 'shared.pt'} does not fit the model of this config: {exc}") from exc
        if optimizer is not None and state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
        return state


def snapshot_run(version: CheckpointVersion, dest: Path, config_text: str) -> None:
    """Make ``dest`` a run directory of its own that holds ``version`` alone: its files
    hard-linked (no copy, and they outlive the run's pruning of the version), LATEST
    naming it, and the run's config, so every command that reads a run (eval, export,
    query, ``model.init_from``) reads it. Built under a temporary name, fsynced and
    renamed: ``dest`` is whole or absent. The caller owns the run directory, so what an
    earlier, killed attempt left under a temporary name is removed first."""
    for stale in dest.parent.glob(f"{dest.name}{TMP_MARKER}*"):
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_directory(dest) as tmp:
        checkpoints = tmp / "checkpoints"
        shutil.copytree(version.path, checkpoints / version.name, copy_function=os.link)
        (checkpoints / LATEST_NAME).write_text(version.name + "\n")
        (tmp / "config.yaml").write_text(config_text, encoding="utf-8")


class CheckpointStore:
    """The checkpoint directory of a run: find the latest version, write new ones."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self._publisher = _Publisher()

    def versions(self) -> list[Path]:
        """Version directories, oldest first, including any newer than LATEST (unpublished)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(found, key=lambda p: int(p.name[1:]))

    def latest(self) -> CheckpointVersion | None:
        """The version LATEST names (after this store's background publication, if any)."""
        self.flush()
        name = self._latest_name()
        return None if name is None else CheckpointVersion(self.root / name)

    def write(
        self,
        meta: Mapping[str, Any],
        shared: Mapping[str, Any],
        changed: Mapping[PartitionKey, PartitionState],
        all_partitions: list[PartitionKey],
        *,
        base: CheckpointVersion | None,
        keep_versions: int,
        pinned: Collection[str] = (),
        background: bool = False,
        sync_with: Collection[Path] = (),
    ) -> CheckpointVersion:
        """Commit a new version: ``changed`` partitions written, the rest of
        ``all_partitions`` hard-linked from ``base``; once it is published, the
        versions before it beyond ``keep_versions`` in all are removed, except
        those named in ``pinned``.
        ``sync_with``: files outside the version that its ``meta`` counts on (the
        metrics log whose length it records), fsynced before it is named.

        With ``background``, the version is built and renamed here and published
        (fsynced, named by LATEST, old versions pruned) by a thread, without
        waiting for an earlier publication; the returned version is readable at
        once. An earlier background publication's error is raised here. Where the
        boot cannot be known (not Linux), publishing stays in the caller:
        ``recover`` could not tell a whole unpublished version from one a crash
        cut short.
        """
        background = background and current_boot_id() is not None
        if background:
            self._publisher.raise_error()
        else:
            self.flush()  # LATEST only moves forward
        final = self._build(meta, shared, changed, all_partitions, base)
        publish = functools.partial(self._publish, final, keep_versions, frozenset(pinned), tuple(sync_with))
        if background:
            self._publisher.submit(publish)
        else:
            publish()
        return CheckpointVersion(final)

    def flush(self) -> None:
        """Wait until the newest version given to the background thread is durable and
        named by LATEST; a background publication's error is raised here."""
        self._publisher.wait()

    def recover(self) -> None:
        """Settle the versions newer than LATEST that a killed writer left unpublished.

        Written in this boot: whole (the page cache outlives a killed process), so
        published in order. Written in another boot, or by an unknown one: possibly
        incomplete after a crash, so removed, with any newer ones (they were built on
        it). A live writer's versions are left alone.
        """
        if not self.root.is_dir():
            return
        self.flush()
        named = self._latest_name()
        published = -1 if named is None else int(named[1:])
        boot, settling = current_boot_id(), True
        for path in self.versions():
            if int(path.name[1:]) <= published:
                continue
            writer = _writer_of(path)
            if writer.get("boot_id") == boot and other_process_alive(writer.get("pid")):
                return
            settling = settling and boot is not None and writer.get("boot_id") == boot
            if settling:
                self._publish(path, keep_versions=None, pinned=frozenset())
            else:
                shutil.rmtree(path, ignore_errors=True)

    def _latest_name(self) -> str | None:
        pointer = self.root / LATEST_NAME
        if not pointer.is_file():
            return None
        name = pointer.read_bytes().decode("utf-8", "replace").strip()  # any bytes: the check below names them
        if not _VERSION_RE.match(name) or not (self.root / name).is_dir():
            raise CheckpointError(f"{pointer} names {name!r}, which is not a complete checkpoint version")
        return name

    def _build(
        self, meta: Mapping[str, Any], shared: Mapping[str, Any], changed: Mapping[PartitionKey, PartitionState],
        all_partitions: list[PartitionKey], base: CheckpointVersion | None,
    ) -> Path:
        """Write the version under a temporary name and rename it into place (not yet durable)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        existing = self.versions()
        number = int(existing[-1].name[1:]) + 1 if existing else 0
        final = self.root / f"v{number:06d}"
        tmp = temporary_sibling(final)
        tmp.mkdir()
        try:
            for key in all_partitions:
                dest = tmp / partition_relpath(*key)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if key in changed:
                    write_partition_file(dest, changed[key])
                elif base is not None:
                    os.link(base.partition_path(*key), dest)
                else:
                    raise CheckpointError(f"partition {key} is neither changed nor in a base version")
            torch.save(dict(shared), tmp / "shared.pt")
            writer = {"boot_id": current_boot_id(), "pid": os.getpid()}
            (tmp / "meta.json").write_text(json.dumps({**meta, "format_version": CHECKPOINT_FORMAT, "writer": writer}, indent=2))
            os.replace(tmp, final)
        except (OSError, RuntimeError) as exc:  # a full disk or an I/O error (torch.save raises either)
            raise CheckpointError(f"cannot write checkpoint {final}: {exc} (the complete versions before it "
                                  "are untouched: free the space and run again to resume)") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _publish(self, version: Path, keep_versions: int | None, pinned: frozenset[str],
                 sync_with: tuple[Path, ...] = ()) -> None:
        """Make ``version`` (and ``sync_with``) durable and name it in LATEST; then remove the
        versions before it beyond ``keep_versions`` in all (None: none removed). Newer
        versions, still to be published, are left alone."""
        for path in sync_with:
            fsync_path(path)
        fsync_tree(version)
        fsync_path(self.root)
        write_text_atomic(self.root / LATEST_NAME, version.name + "\n")
        if keep_versions is not None:
            number = int(version.name[1:])
            older = [p for p in self.versions() if int(p.name[1:]) < number]
            for old in older[: max(len(older) - (keep_versions - 1), 0)]:
                if old.name not in pinned:
                    shutil.rmtree(old, ignore_errors=True)

    def _remove_stale_temporaries(self) -> None:
        """Half-built versions left by a killed process (never renamed into place)."""
        for p in self.root.iterdir():
            if TMP_MARKER in p.name and p.name.startswith("v") and not _temporary_writer_alive(p.name):
                shutil.rmtree(p, ignore_errors=True)


class _Publisher:
    """Runs publications in one background thread, newest first: a publication submitted
    while another runs waits for it, and replaces any that is still waiting (skipped).
    The thread lives while there is work; an error is kept until it is raised."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._waiting: Callable[[], None] | None = None
        self._running = False
        self._error: BaseException | None = None

    def submit(self, publish: Callable[[], None]) -> None:
        with self._state:
            self._waiting = publish
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="bigkg-checkpoint-publish").start()

    def wait(self) -> None:
        """Block until nothing is running or waiting; then raise any error kept."""
        with self._state:
            self._state.wait_for(lambda: not self._running)
        self.raise_error()

    def raise_error(self) -> None:
        """Raise (once) the error of a publication that failed."""
        with self._state:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            with self._state:
                publish, self._waiting = self._waiting, None
                if publish is None:
                    self._running = False
                    self._state.notify_all()
                    return
            try:
                publish()
            except BaseException as exc:  # re-raised in the writer; the waiting one is dropped
                with self._state:
                    self._error, self._waiting = exc, None


def _writer_of(version: Path) -> dict[str, Any]:
    """The ``writer`` (boot id, pid) a version's meta.json records; empty when unreadable."""
    try:
        writer = json.loads((version / "meta.json").read_text()).get("writer")
    except (OSError, ValueError, AttributeError):
        return {}
    return writer if isinstance(writer, dict) else {}


def _temporary_writer_alive(tmp_name: str) -> bool:
    """Whether the process that made a temporary name (``...tmp-<pid>-<hex>``) still runs here."""
    try:
        pid = int(tmp_name.split(TMP_MARKER, 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return other_process_alive(pid)
