"""Offline, streaming partitioning of edge lists into bigkg datasets."""
