"""Small real dataset directories and checkpoints for the evaluation tests.

Datasets are written with bigkg.format, checkpoints with CheckpointStore.
Entities are spread over partitions at random so that global ids
(partition offset + local id) differ from the order of the names; the tests
get back each name's global id to build their brute-force references.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bigkg.checkpoint import CheckpointStore, PartitionState
from bigkg.config import config_from_dict
from bigkg.format import (
    BucketEdges,
    EntityType,
    Manifest,
    Relation,
    bucket_key,
    load_manifest,
    write_bucket,
    write_entity_names,
    write_manifest,
)
from bigkg.model import build_model


def write_dataset(
    root: Path,
    entity_counts: dict[str, int],
    relations: list[tuple[str, str, str]],
    splits: dict[str, np.ndarray],
    num_partitions: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a dataset; ``splits[s]`` is an int array [n, 3] of (head, rel, tail) entity indices.

    Entity k of type T is named ``f"{T}{k}"``. Returns, per type, the global id of entity k.
    """
    rng = np.random.default_rng(seed)
    part_of: dict[str, np.ndarray] = {}
    local_of: dict[str, np.ndarray] = {}
    gid_of: dict[str, np.ndarray] = {}
    entity_types = []
    for name, count in entity_counts.items():
        part = rng.integers(0, num_partitions, count)
        local = np.zeros(count, dtype=np.int64)
        counts = []
        for p in range(num_partitions):
            members = np.flatnonzero(part == p)
            local[members] = np.arange(members.size)
            counts.append(int(members.size))
            write_entity_names(root, name, p, [f"{name}{k}" for k in members])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        part_of[name], local_of[name] = part, local
        gid_of[name] = offsets[part] + local
        entity_types.append(EntityType(name, counts))
    rel_objs = [Relation(*r) for r in relations]
    bucket_counts: dict[str, dict[str, int]] = {}
    for split, triples in splits.items():
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        lhs_t = [rel_objs[r].lhs_type for r in triples[:, 1]]
        rhs_t = [rel_objs[r].rhs_type for r in triples[:, 1]]
        pi = np.array([part_of[t][h] for t, h in zip(lhs_t, triples[:, 0])], dtype=np.int64)
        pj = np.array([part_of[t][x] for t, x in zip(rhs_t, triples[:, 2])], dtype=np.int64)
        li = np.array([local_of[t][h] for t, h in zip(lhs_t, triples[:, 0])], dtype=np.int64)
        lj = np.array([local_of[t][x] for t, x in zip(rhs_t, triples[:, 2])], dtype=np.int64)
        bucket_counts[split] = {}
        for i in range(num_partitions):
            for j in range(num_partitions):
                sel = (pi == i) & (pj == j)
                if sel.any():
                    edges = BucketEdges(li[sel].astype(np.int32), lj[sel].astype(np.int32),
                                        triples[sel, 1].astype(np.int32), None)
                    write_bucket(root, split, i, j, edges)
                    bucket_counts[split][bucket_key(i, j)] = int(sel.sum())
    write_manifest(root, Manifest(num_partitions, entity_types, rel_objs, bucket_counts))
    return gid_of


class TensorSource:
    """Vectors held in memory per (type, partition): the protocol the checkpoint source implements."""

    def __init__(self, vectors_by_type: dict[str, torch.Tensor], offsets: dict[str, np.ndarray]):
        self.vectors, self.offsets = vectors_by_type, offsets
        self.loads = 0

    def partition_offsets(self, entity_type):
        return self.offsets[entity_type]

    def load(self, entity_type, part):
        self.loads += 1
        o = self.offsets[entity_type]
        return self.vectors[entity_type][o[part] : o[part + 1]]

    def dimension(self, entity_type):
        return int(self.vectors[entity_type].shape[1])


TYPES = {"user": 12, "item": 20}
RELS = [("likes", "user", "item"), ("similar", "item", "item"), ("follows", "user", "user")]


def random_triples(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random (head, rel, tail) index triples over TYPES and RELS."""
    rel = rng.integers(0, 3, n)
    counts = [(TYPES[RELS[r][1]], TYPES[RELS[r][2]]) for r in rel]
    return np.array([[rng.integers(0, a), r, rng.integers(0, b)] for r, (a, b) in zip(rel, counts)])


def write_trained_run(tmp_path: Path, overrides=(), splits=None, operator="diagonal"):
    """A dataset over TYPES/RELS and a checkpoint of random vectors and relation parameters.

    Returns (config, model, splits, vectors by entity index per type).
    """
    rng = np.random.default_rng(5)
    if splits is None:
        splits = {"train": random_triples(rng, 150), "valid": random_triples(rng, 20), "test": random_triples(rng, 40)}
    data, run = tmp_path / "data", tmp_path / "run"
    gid = write_dataset(data, TYPES, RELS, splits, num_partitions=2, seed=2)
    manifest = load_manifest(data)
    config = config_from_dict(
        {"dataset": str(data), "run_dir": str(run), "model": {"dim": 6, "operator": operator},
         "eval": {"query_batch": 8, "candidate_chunk": 5}},
        list(overrides),
    )
    model = build_model(config, manifest)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    vectors = {t: torch.randn(n, 6, generator=g) for t, n in TYPES.items()}  # in global-id order
    changed, keys = {}, []
    for et in manifest.entity_types:
        start = 0
        for part, count in enumerate(et.partition_counts):
            keys.append((et.name, part))
            emb = vectors[et.name][start : start + count].clone()
            changed[(et.name, part)] = PartitionState(emb, torch.zeros(count))
            start += count
    CheckpointStore(run).write({"epoch": 3, "model": config.model.structure()}, {"model": model.state_dict()}, changed, keys,
                               base=None, keep_versions=1)
    # Vectors by entity index (the names' numbering), independent of partitions.
    by_index = {t: vectors[t][torch.from_numpy(gid[t])] for t in TYPES}
    return config, model, splits, by_index
