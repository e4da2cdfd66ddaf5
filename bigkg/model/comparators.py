"""Comparators: how an operated head is compared with a tail. Higher is better.

``candidates(a, c)`` scores every row of ``a`` [..., N, d] against every row of
``c`` [..., M, d] -> [..., N, M] (one batched matrix product); ``pairs(a, b)``
scores row k of ``a`` against row k of ``b`` -> [...].
"""

from __future__ import annotations

import torch
from torch import Tensor


class _CandidateProduct(torch.autograd.Function):
    """``a @ c^T`` for ``a`` [..., N, d] and ``c`` [..., M, d] with the same leading dims,
    whose backward gives both gradients contiguous, in their inputs' layout.

    Autograd's own backward computes c's gradient as (a^T G)^T: a transposed
    view that the caller's reshape or the row optimizer must then copy, a
    cache-unfriendly pass as large as the candidates. G^T a is the same product
    in the right layout.
    """

    @staticmethod
    def forward(ctx, a: Tensor, c: Tensor) -> Tensor:
        ctx.save_for_backward(a, c)
        return a @ c.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, c = ctx.saved_tensors
        grad_a = grad @ c if ctx.needs_input_grad[0] else None
        grad_c = grad.transpose(-1, -2) @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_c


def candidate_product(a: Tensor, c: Tensor) -> Tensor:
    """[..., N, M] dot products of every row of ``a`` with every row of ``c``."""
    if a.shape[:-2] == c.shape[:-2]:
        return _CandidateProduct.apply(a, c)
    return a @ c.transpose(-1, -2)  # broadcast leading dims: autograd sums c's gradient over them


class Comparator:
    name = ""

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        raise NotImplementedError

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError


class DotComparator(Comparator):
    name = "dot"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        return candidate_product(a, c)

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(-1)


class CosComparator(Comparator):
    name = "cos"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        return candidate_product(_unit(a), _unit(c))

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return (_unit(a) * _unit(b)).sum(-1)


class SquaredL2Comparator(Comparator):
    """Negative squared Euclidean distance, via |a|² + |c|² − 2a·c (one matrix product)."""

    name = "squared_l2"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        sq = (a * a).sum(-1, keepdim=True) + (c * c).sum(-1).unsqueeze(-2) - 2 * candidate_product(a, c)
        return -sq.clamp_min(0)

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return -((a - b) ** 2).sum(-1)


class L2Comparator(SquaredL2Comparator):
    """Negative Euclidean distance; clamped away from 0 so the gradient stays finite."""

    name = "l2"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        return -(-super().candidates(a, c)).clamp_min(1e-12).sqrt()

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return -(-super().pairs(a, b)).clamp_min(1e-12).sqrt()


class BiasedComparator(Comparator):
    """PBG's bias: coordinate 0 of both vectors is added to the score, the rest compared by ``base``."""

    def __init__(self, base: Comparator):
        self.base = base
        self.name = f"{base.name}+bias"  # not the base's: its shortcuts (closed form, head ranking) do not hold

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        return self.base.candidates(a[..., 1:], c[..., 1:]) + a[..., :1] + c[..., 0].unsqueeze(-2)

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return self.base.pairs(a[..., 1:], b[..., 1:]) + a[..., 0] + b[..., 0]


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


COMPARATORS: dict[str, type[Comparator]] = {
    c.name: c for c in (DotComparator, CosComparator, L2Comparator, SquaredL2Comparator)
}


def build_comparator(name: str, bias: bool = False) -> Comparator:
    comparator = COMPARATORS[name]()
    return BiasedComparator(comparator) if bias else comparator
