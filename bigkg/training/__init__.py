"""Training: the bucket-by-bucket Trainer and its per-batch step."""

from bigkg.training.trainer import Trainer, TrainingError, train

__all__ = ["Trainer", "TrainingError", "train"]
