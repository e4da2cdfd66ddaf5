"""model.global_embedding (PBG's global_emb): one trained vector per entity type, added to every
representation of the type; exports and evaluation include it, a resume under the other
setting is refused, and model.init_from carries the representations over either way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.evaluation import evaluate
from bigkg.export import export_embeddings
from bigkg.evaluation.source import EvaluationError, open_run
from bigkg.format import load_manifest, read_entity_names
from bigkg.pretrained import read_exported
from bigkg.training import TrainingError, train
from eval_datasets import RELS, TYPES, random_triples, write_dataset


@pytest.fixture()
def typed(tmp_path):
    """Two entity types (user, item), three relations between them, two partitions."""
    rng = np.random.default_rng(3)
    splits = {"train": random_triples(rng, 400), "valid": random_triples(rng, 20), "test": random_triples(rng, 30)}
    write_dataset(tmp_path / "data", TYPES, RELS, splits, num_partitions=2, seed=2)
    return tmp_path / "data"


def run_config(data, run_dir, global_embedding=True, **model):
    return config_from_dict({
        "dataset": str(data), "run_dir": str(run_dir),
        "model": {"dim": 8, "operator": "diagonal", "init_scale": 0.1, "global_embedding": global_embedding, **model},
        "training": {"epochs": 2, "batch_size": 50, "chunk_size": 10, "num_uniform_negatives": 5, "threads": 1,
                     "lr": 0.1, "foreign_negatives": 4},
        "eval": {"valid_every": 0},
    })


def exported(config, path):
    run = open_run(config)
    export_embeddings(config.dataset, run.manifest, run.source, path, "parquet")
    return {(rows.entity_type, name): vec for rows in read_exported(path)
            for name, vec in zip(rows.names.to_pylist(), rows.vectors)}


def test_training_learns_a_vector_per_type_that_exports_and_evaluation_include(typed, tmp_path):
    config = run_config(typed, tmp_path / "run")
    train(config)
    version = CheckpointStore(config.run_dir).latest()
    table = version.shared_state()["model"]["global_embeddings"]
    manifest = load_manifest(typed)
    assert table.shape == (len(manifest.entity_types), 8)
    assert (table.abs().sum(1) > 0).all()  # both types' vectors moved from zero
    assert not torch.allclose(table[0], table[1])

    vectors = exported(config, tmp_path / "emb.parquet")
    for k, et in enumerate(manifest.entity_types):  # an export row: the stored row plus its type's vector
        for part in range(len(et.partition_counts)):
            rows, _ = version.load_partition(et.name, part)
            for name, row in zip(read_entity_names(typed, et.name, part).to_pylist(), rows):
                np.testing.assert_allclose(vectors[(et.name, name)], (row + table[k]).numpy(), rtol=1e-6, atol=1e-7)

    # Evaluation ranks the representations: a run without global embeddings that starts from
    # this one (model.init_from folds them into the rows; relation operators carried over) and
    # trains no further gets the same metrics.
    folded = run_config(typed, tmp_path / "folded", global_embedding=False, init_from=str(config.run_dir))
    folded.training.epochs = 0
    train(folded)
    with_global, without = evaluate(config, "test"), evaluate(folded, "test")
    for key in ("mrr", "mr", "hits@1", "hits@10"):
        assert with_global[key] == pytest.approx(without[key], rel=1e-9)


def test_a_resume_or_evaluation_under_the_other_setting_is_refused_and_an_older_checkpoint_resumes(typed, tmp_path):
    train(run_config(typed, tmp_path / "run"))
    with pytest.raises(TrainingError, match="model.global_embedding=True but the config says False"):
        train(run_config(typed, tmp_path / "run", global_embedding=False))
    with pytest.raises(EvaluationError, match="model.global_embedding=True but the config says False.*config.yaml"):
        evaluate(run_config(typed, tmp_path / "run", global_embedding=False), "test")

    plain = run_config(typed, tmp_path / "plain", global_embedding=False)
    train(plain)
    meta_path = CheckpointStore(plain.run_dir).latest().path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["model"]["global_embedding"]  # a checkpoint written before the option existed
    meta_path.write_text(json.dumps(meta))
    more = run_config(typed, tmp_path / "plain", global_embedding=False)
    more.training.epochs = 3
    assert train(more)["epochs_completed"] == 3


@pytest.mark.parametrize("old, new", [(True, False), (True, True), (False, True)])
def test_init_from_an_earlier_run_keeps_its_representations(typed, tmp_path, old, new):
    """The earlier run's global embedding is folded into its rows; this run's own start at zero,
    so the representations it starts from are the earlier run's, whichever the settings."""
    earlier = run_config(typed, tmp_path / "earlier", global_embedding=old)
    train(earlier)
    later = run_config(typed, tmp_path / "later", global_embedding=new, init_from=str(tmp_path / "earlier"))
    later.training.epochs = 0
    train(later)
    if new:
        assert torch.equal(CheckpointStore(later.run_dir).latest().shared_state()["model"]["global_embeddings"],
                           torch.zeros(2, 8))
    before, after = exported(earlier, tmp_path / "before.parquet"), exported(later, tmp_path / "after.parquet")
    assert before.keys() == after.keys()
    for key, vector in before.items():
        np.testing.assert_allclose(after[key], vector, rtol=1e-6, atol=1e-7)
