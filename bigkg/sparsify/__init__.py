"""Entry-wise sparsification (Unifews): pruned messages and weights, and a count of executed multiply-adds."""

from bigkg.sparsify.counter import MacCounter
from bigkg.sparsify.messages import MessagePruner, SparsifyError
from bigkg.sparsify.weights import WeightPruner, feature_scale

__all__ = ["MacCounter", "MessagePruner", "SparsifyError", "WeightPruner", "feature_scale"]
