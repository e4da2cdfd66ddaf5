"""Filtered link-prediction evaluation and recommendation metrics.

``evaluate(config, split)`` ranks every triple of a split in both directions
against all entities of the right type (or a sample), filtered by the known
triples of train+valid+test, from the run's latest checkpoint.
"""

from bigkg.evaluation.evaluate import evaluate

__all__ = ["evaluate"]
