"""Regularisers on the rows a batch used (entity embeddings, relation parameters).

N3 (Lacroix et al., 2018) penalises cubed magnitudes; for complex operators the
magnitude is the modulus of each complex coordinate. L2 penalises squares.
"""

from __future__ import annotations

from torch import Tensor


def _magnitudes(x: Tensor, is_complex: bool) -> Tensor:
    if not is_complex:
        return x.abs()
    re, im = x.chunk(2, dim=-1)
    return (re * re + im * im + 1e-30).sqrt()


def regularization(name: str, tensors: list[Tensor], is_complex: bool) -> Tensor:
    """Sum of the penalty over every row of ``tensors``."""
    power = {"n3": 3, "l2": 2}[name]
    return sum(_magnitudes(t, is_complex).pow(power).sum() for t in tensors)  # type: ignore[return-value]
