"""Command summaries as strict JSON: what ``--json PATH`` writes and the commands print.

A metric without a value (an empty split's MRR, an adjusted index of queries that each
had one candidate) is NaN in Python; ``json.dumps`` would write the bare token ``NaN``,
which strict parsers (``jq``, JavaScript, Go) refuse. Summaries write ``null`` instead.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from bigkg.atomic import write_text_atomic


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def summary_json(summary: Any, *, sort_keys: bool = False) -> str:
    """``summary`` as indented strict JSON: NaN and infinities become null."""
    return json.dumps(_finite_or_null(summary), indent=2, sort_keys=sort_keys, allow_nan=False)


def write_summary(path: str | os.PathLike[str], summary: Any, *, sort_keys: bool = False) -> str:
    """Write ``summary_json(summary)`` to ``path`` atomically; returns the text."""
    text = summary_json(summary, sort_keys=sort_keys)
    write_text_atomic(path, text + "\n")
    return text
