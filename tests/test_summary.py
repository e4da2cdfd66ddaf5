"""Command summaries are strict JSON: a metric without a value is null, not NaN."""

import json
import math

import numpy as np
import pytest

from bigkg.summary import summary_json, write_summary


def strict_loads(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_metrics_become_null_everywhere_in_the_summary(tmp_path):
    summary = {"mrr": float("nan"), "mr": 3.5, "count": 0, "by": {"r": {"amri": np.float64("nan"), "hits@1": 0.25}},
               "curve": [1.0, float("inf"), -float("inf")], "pair": (float("nan"), "x"), "ok": True, "none": None}
    text = write_summary(tmp_path / "s.json", summary, sort_keys=True)
    assert (tmp_path / "s.json").read_text() == text + "\n"
    parsed = strict_loads(text)
    assert parsed == {"mrr": None, "mr": 3.5, "count": 0, "by": {"r": {"amri": None, "hits@1": 0.25}},
                      "curve": [1.0, None, None], "pair": [None, "x"], "ok": True, "none": None}
    assert list(parsed) == sorted(parsed)
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"mrr": math.nan}))  # what json.dumps alone would have written


def test_finite_values_are_written_as_they_are():
    summary = {"edges_per_s": 12067.25, "best": {"epoch": 3, "mrr": 0.3286}, "names": ["a", "b"]}
    assert strict_loads(summary_json(summary)) == summary
