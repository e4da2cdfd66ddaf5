"""Regularisers on the rows a batch used (entity embeddings, relation parameters).

N3 (Lacroix et al., 2018) penalises cubed magnitudes; for complex operators the
magnitude is the modulus of each complex coordinate. L2 penalises squares.
``regularization_gradient`` is the penalty's gradient in closed form, for the
steps that add it to the rows' gradients without autograd.
"""

from __future__ import annotations

import torch
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


def regularization_gradient(name: str, x: Tensor, is_complex: bool) -> Tensor:
    """The gradient of ``regularization(name, [x], is_complex)`` with respect to ``x``:
    L2 2x; N3 3x|x|, with a complex coordinate's modulus for both of its parts."""
    if name == "l2":
        return 2 * x
    if name != "n3":
        raise ValueError(f"unknown regularizer {name!r}")
    magnitude = _magnitudes(x, is_complex)
    return 3 * x * (torch.cat([magnitude, magnitude], dim=-1) if is_complex else magnitude)
