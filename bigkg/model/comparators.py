"""Comparators: how an operated head is compared with a tail. Higher is better.

``candidates(a, c)`` scores every row of ``a`` [..., N, d] against every row of
``c`` [..., M, d] -> [..., N, M] (one batched matrix product); ``pairs(a, b)``
scores row k of ``a`` against row k of ``b`` -> [...].
"""

from __future__ import annotations

from torch import Tensor


class Comparator:
    name = ""

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        raise NotImplementedError

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError


class DotComparator(Comparator):
    name = "dot"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        return a @ c.transpose(-1, -2)

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(-1)


class CosComparator(Comparator):
    name = "cos"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        return _unit(a) @ _unit(c).transpose(-1, -2)

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return (_unit(a) * _unit(b)).sum(-1)


class SquaredL2Comparator(Comparator):
    """Negative squared Euclidean distance, via |a|² + |c|² − 2a·c (one matrix product)."""

    name = "squared_l2"

    def candidates(self, a: Tensor, c: Tensor) -> Tensor:
        sq = (a * a).sum(-1, keepdim=True) + (c * c).sum(-1).unsqueeze(-2) - 2 * (a @ c.transpose(-1, -2))
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


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


COMPARATORS: dict[str, type[Comparator]] = {
    c.name: c for c in (DotComparator, CosComparator, L2Comparator, SquaredL2Comparator)
}


def build_comparator(name: str) -> Comparator:
    return COMPARATORS[name]()
