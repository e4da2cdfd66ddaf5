"""The inner loop of filtered ranking: per query, how many candidates score above its
answer and how many score the same.

On the CPU one compiled pass (numba, a query row per iteration) reads each score once and
keeps both counts in registers. The torch path, for other devices and the reference the
tests compare the compiled one with, builds two boolean matrices and sums each; on the
CPU that was as slow as scoring the candidates (docs/benchmarks.md, "Evaluation:
counting in one compiled pass").
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor


def count_above_and_tied(scores: Tensor, answer_scores: Tensor, greater: Tensor, equal: Tensor) -> None:
    """Add to ``greater`` [n] and ``equal`` [n] (int64) how many entries of each row of
    ``scores`` [n, m] are above and equal to the row's ``answer_scores`` [n] (NaN is neither)."""
    if _compiled_applies(scores, answer_scores, greater, equal):
        _count_rows(scores.numpy(), answer_scores.numpy(), greater.numpy(), equal.numpy())
        return
    answers = answer_scores.unsqueeze(1)
    # int32 sums of the boolean masks: about twice as fast as the default int64.
    greater += (scores > answers).sum(dim=1, dtype=torch.int32)
    equal += (scores == answers).sum(dim=1, dtype=torch.int32)


def _compiled_applies(scores: Tensor, answer_scores: Tensor, greater: Tensor, equal: Tensor) -> bool:
    """CPU tensors of the one layout the kernel is compiled for, none needing gradients."""
    floats, counts = (scores, answer_scores), (greater, equal)
    return (
        all(t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad for t in floats + counts)
        and all(t.dtype == torch.float32 for t in floats)
        and all(t.dtype == torch.int64 for t in counts)
    )


@numba.njit(parallel=True, nogil=True, cache=True)
def _count_rows(scores: np.ndarray, answers: np.ndarray, greater: np.ndarray, equal: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in numba.prange(scores.shape[0]):
        answer, above, same = answers[i], 0, 0
        for j in range(scores.shape[1]):
            s = scores[i, j]
            above += s > answer
            same += s == answer
        greater[i] += above
        equal[i] += same
