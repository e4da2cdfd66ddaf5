"""Exact accounting of what autograd keeps for the backward pass.

Inside :class:`SavedBytes`, every tensor autograd saves (by built-in ops and by
custom Functions alike) passes through a pack hook; we sum the bytes of the
distinct storages behind them, so a tensor saved twice, or a view of one
already saved, counts once. Storages are classed as parameters (kept alive by
the model anyway), graph structure (indices and edge weights, the same in every
mode), integer index tensors (edge endpoints and relation ids, also the
compacted ones kept by pruning, and channel ids) or activations (float values and packed codes:
what quantization and recomputation shrink).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor


@dataclass
class SavedBytesReport:
    activations: int = 0
    indices: int = 0
    structure: int = 0
    parameters: int = 0
    by_dtype: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.activations + self.indices + self.structure + self.parameters


class SavedBytes:
    """Context manager summing the bytes autograd saves while it is active."""

    def __init__(self, parameters: Iterable[Tensor] = (), structure: Iterable[Tensor] = ()) -> None:
        self._parameters = {_key(t) for t in parameters}
        self._structure = {_key(t) for t in structure}
        self._seen: dict[int, Tensor] = {}
        self.report = SavedBytesReport()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: Tensor) -> Tensor:
        key = _key(t)
        if key not in self._seen:
            # Holding the tensor keeps its storage from being freed and its
            # address reused by a later, different tensor during the step.
            self._seen[key] = t
            nbytes = t.untyped_storage().nbytes()
            if key in self._parameters:
                self.report.parameters += nbytes
            elif key in self._structure:
                self.report.structure += nbytes
            elif t.dtype in _INDEX_DTYPES:
                self.report.indices += nbytes
            else:
                self.report.activations += nbytes
                name = str(t.dtype).removeprefix("torch.")
                self.report.by_dtype[name] = self.report.by_dtype.get(name, 0) + nbytes
        return t

    def __enter__(self) -> "SavedBytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._seen.clear()


_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)


def _key(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _unpack(t: Tensor) -> Tensor:
    return t
