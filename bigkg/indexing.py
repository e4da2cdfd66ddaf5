"""Gathering parameter rows by id, as layers and relation operators do per edge."""

from __future__ import annotations

from torch import Tensor


def gather_rows(parameter: Tensor, ids: Tensor) -> Tensor:
    """The rows of ``parameter`` named by ``ids`` [...] -> [..., *row].

    An ``index_select``, whose gradient is an ``index_add``. Advanced indexing
    (``parameter[ids]``) would give the same rows, but its gradient is an
    accumulating ``index_put``, which on a GPU sums the repeats of one id one
    after another: a batch names its commonest relations thousands of times."""
    return parameter.index_select(0, ids.reshape(-1)).view(*ids.shape, *parameter.shape[1:])
