"""Helpers of the partitioner tests: run the partitioner, read a dataset back as names."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from bigkg.format import load_manifest, read_bucket, read_entity_names
from partitioner.readers import InputFormat
from partitioner.run import PartitionOptions, run_partition


def partition(inputs: list[Path], out: Path, **kwargs) -> dict:
    fmt_keys = {"fmt", "delimiter", "header", "columns", "weight_column", "on_bad_line", "batch_rows", "block_bytes"}
    fmt = InputFormat(**{k: kwargs.pop(k) for k in list(kwargs) if k in fmt_keys})
    opts = PartitionOptions(inputs=[str(p) for p in inputs], out=out, input_format=fmt, progress=False, **kwargs)
    return run_partition(opts)


def split_triples(root: Path, split: str, with_weights: bool = False) -> Counter:
    """Every edge of ``split`` as (head name, relation name, tail name[, weight]), with multiplicity.

    Also checks that each bucket's ids lie inside its partitions and that the
    manifest's bucket counts match the files.
    """
    manifest = load_manifest(root)
    P = manifest.num_partitions
    names = {
        (et.name, p): np.asarray(read_entity_names(root, et.name, p).to_pylist(), dtype=object)
        for et in manifest.entity_types
        for p in range(P)
    }
    rel_names = [r.name for r in manifest.relations]
    triples: Counter = Counter()
    for i in range(P):
        for j in range(P):
            edges = read_bucket(root, split, i, j)
            assert len(edges) == manifest.bucket_count(split, i, j)
            for k in range(len(edges)):
                rel = manifest.relations[int(edges.rel[k])]
                head_names, tail_names = names[(rel.lhs_type, i)], names[(rel.rhs_type, j)]
                assert 0 <= edges.lhs[k] < len(head_names) and 0 <= edges.rhs[k] < len(tail_names)
                triple = (head_names[edges.lhs[k]], rel_names[int(edges.rel[k])], tail_names[edges.rhs[k]])
                if with_weights:
                    triple += (float(edges.weight[k]),)
                triples[triple] += 1
    return triples


def file_triples(path: Path, sep: str = "\t") -> Counter:
    with open(path) as fh:
        return Counter(tuple(line.rstrip("\n").split(sep)) for line in fh if line.strip())
