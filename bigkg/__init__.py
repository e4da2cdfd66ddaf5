"""bigkg: partitioned, distributed knowledge-graph embedding training.

The training and query commands' Python API, importable from the package itself
(``docs/python.md``; partitioning is ``partitioner.run.run_partition``)::

    import bigkg
    config = bigkg.load_config("configs/codex-s.yaml", ["training.epochs=5"])
    bigkg.train(config)
    bigkg.evaluate(config, "test")["mrr"]
    run = bigkg.open_run(config)
    bigkg.query(run, "relation", 10, head="name")

Names are imported on first use, so ``import bigkg`` stays light (``bigkg partition``
never loads torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "Config": "bigkg.config",
    "load_config": "bigkg.config",
    "config_from_dict": "bigkg.config",
    "train": "bigkg.training.trainer",
    "evaluate": "bigkg.evaluation.evaluate",
    "open_run": "bigkg.evaluation.source",
    "TrainedRun": "bigkg.evaluation.source",
    "query": "bigkg.evaluation.query",
    "similar": "bigkg.evaluation.query",
    "answer_file": "bigkg.evaluation.query",
    "score_triples": "bigkg.evaluation.scoring",
    "score_file": "bigkg.evaluation.scoring",
    "entity_vectors": "bigkg.evaluation.scoring",
    "export_embeddings": "bigkg.export",
    "export_relations": "bigkg.export",
    "BigKGError": "bigkg.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'bigkg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
