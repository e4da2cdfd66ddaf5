"""FB15k-237 through the partitioner and back: every edge exactly once, with its names."""

from __future__ import annotations

import pytest

from bigkg.format import load_manifest
from partition_helpers import file_triples, partition, split_triples


@pytest.mark.parametrize("num_partitions", [1, 4])
def test_fb15k237_round_trip(fb15k237, tmp_path, num_partitions):
    out = tmp_path / "fb"
    summary = partition(
        [fb15k237 / "train.txt"],
        out,
        valid=[str(fb15k237 / "valid.txt")],
        test=[str(fb15k237 / "test.txt")],
        num_partitions=num_partitions,
    )
    manifest = load_manifest(out)
    assert manifest.num_partitions == num_partitions
    assert manifest.entity_types[0].count == 14541
    assert len(manifest.relations) == 237
    for split in ("train", "valid", "test"):
        expected = file_triples(fb15k237 / f"{split}.txt")
        assert split_triples(out, split) == expected
        assert summary["edges"][split] == sum(expected.values())
    # Test edges whose entities never occur in training are kept and counted, not dropped.
    train_entities = {e for h, _, t in file_triples(fb15k237 / "train.txt") for e in (h, t)}
    unseen_test = sum(
        n for (h, _, t), n in file_triples(fb15k237 / "test.txt").items()
        if h not in train_entities or t not in train_entities
    )
    assert unseen_test > 0
    assert summary["edges_with_entity_not_in_train"]["test"] == unseen_test
    assert manifest.stats["edges_with_entity_not_in_train"]["test"] == unseen_test
