"""Shared fixtures: the real graphs of ../shared/data, unpacked once per test session,
a real TCPStore for the tests of the distributed pieces, and a tiny dataset written by hand.

The data directory is ``../shared/data`` relative to the repository, or the
directory named by ``BIGKG_SHARED_DATA``; tests that need it skip cleanly
when it is absent.
"""

from __future__ import annotations

import datetime
import os
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch.distributed as dist

from bigkg.format import BucketEdges, EntityType, Manifest, Relation, bucket_key, write_bucket, write_entity_names, write_manifest

from partition_helpers import partition

REPO = Path(__file__).resolve().parents[1]
CODEX = REPO / "data" / "codex-s"


def shared_data_dir() -> Path:
    return Path(os.environ.get("BIGKG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``shared_dataset("FB15k-237")`` -> the unpacked directory (train.txt, valid.txt, test.txt)."""
    unpacked: dict[str, Path] = {}

    def unpack(name: str) -> Path:
        if name not in unpacked:
            archive = shared_data_dir() / f"{name}.tar.xz"
            if not archive.is_file():
                pytest.skip(f"{archive} is not available (set BIGKG_SHARED_DATA to the data directory)")
            dest = tmp_path_factory.mktemp(name)
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
            unpacked[name] = dest / name
        return unpacked[name]

    return unpack


@pytest.fixture(scope="session")
def fb15k237(shared_dataset: Callable[[str], Path]) -> Path:
    return shared_dataset("FB15k-237")


@pytest.fixture(scope="session")
def codex2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CoDEx-S in 2 partitions with its valid and test splits (tests only read it)."""
    out = tmp_path_factory.mktemp("codex") / "codex2"
    partition([CODEX / "train.txt"], out, num_partitions=2, valid=[str(CODEX / "valid.txt")], test=[str(CODEX / "test.txt")])
    return out


@pytest.fixture
def store() -> dist.TCPStore:
    """A TCPStore server on a free port of this process (clients connect to ``store.port``)."""
    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(seconds=30))


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    """A small two-partition dataset written with bigkg.format: 20 and 25 entities, 60 edges per bucket."""
    root = tmp_path / "tiny"
    rng = np.random.default_rng(0)
    counts = [20, 25]
    for p, n in enumerate(counts):
        write_entity_names(root, "entity", p, [f"e{p}_{k}" for k in range(n)])
    bucket_counts = {"train": {}}
    for i in range(2):
        for j in range(2):
            m = 60
            edges = BucketEdges(rng.integers(0, counts[i], m).astype(np.int32), rng.integers(0, counts[j], m).astype(np.int32),
                                rng.integers(0, 3, m).astype(np.int32), None)
            write_bucket(root, "train", i, j, edges)
            bucket_counts["train"][bucket_key(i, j)] = m
    write_manifest(root, Manifest(2, [EntityType("entity", counts)], [Relation(f"r{k}", "entity", "entity") for k in range(3)], bucket_counts))
    return root
