"""bigkg: partitioned, distributed knowledge-graph embedding training."""

__version__ = "0.1.0"
