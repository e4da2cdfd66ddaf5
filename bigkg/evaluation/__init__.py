"""Filtered link-prediction evaluation and recommendation metrics."""
