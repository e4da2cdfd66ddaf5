"""Relation operators: small named modules holding one parameter row per relation id.

``forward(x, rel)`` transforms head representations x [..., d] by the operator
of relation ``rel`` [...] (long). Scores are ``comparator(op(head), tail)``.

To rank heads for a (tail, relation) without reciprocal relations, the model
moves the operator to the tail side instead of applying it to every candidate:

* ``adjoint`` / ``dot_bias``: for the dot comparator,
  dot(op(h), t) = dot(h, adjoint(t)) + dot_bias(t) — exact for every operator here;
* ``inverse``: for distance comparators when ``distance_inverse`` (translation,
  rotation, none): |op(h) − t| = |h − inverse(t)|; for cos only when the
  operator is also ``norm_preserving``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bigkg.indexing import gather_rows


class Operator(nn.Module):
    name = ""
    distance_inverse = False
    norm_preserving = False
    is_complex = False

    def __init__(self, num_relations: int, dim: int):
        super().__init__()
        self.num_relations = num_relations
        self.dim = dim

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        raise NotImplementedError

    def adjoint(self, x: Tensor, rel: Tensor) -> Tensor:
        raise NotImplementedError

    def dot_bias(self, x: Tensor, rel: Tensor) -> Tensor | None:
        """Term of dot(op(h), x) that does not depend on h (None when zero)."""
        return None

    def inverse(self, x: Tensor, rel: Tensor) -> Tensor:
        raise NotImplementedError(f"the {self.name} operator has no distance-preserving inverse")

    def relation_rows(self, rel: Tensor) -> Tensor | None:
        """The parameters of the relations ``rel`` as [..., k] rows, for regularisers."""
        return None


class NoneOperator(Operator):
    name = "none"
    distance_inverse = True
    norm_preserving = True

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        return x

    adjoint = forward
    inverse = forward


class TranslationOperator(Operator):
    """TransE: x + b_r."""

    name = "translation"
    distance_inverse = True

    def __init__(self, num_relations: int, dim: int):
        super().__init__(num_relations, dim)
        self.translation = nn.Parameter(torch.zeros(num_relations, dim))

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        return x + gather_rows(self.translation, rel)

    def adjoint(self, x: Tensor, rel: Tensor) -> Tensor:
        return x

    def dot_bias(self, x: Tensor, rel: Tensor) -> Tensor:
        return (x * gather_rows(self.translation, rel)).sum(-1)

    def inverse(self, x: Tensor, rel: Tensor) -> Tensor:
        return x - gather_rows(self.translation, rel)

    def relation_rows(self, rel: Tensor) -> Tensor:
        return gather_rows(self.translation, rel)


class DiagonalOperator(Operator):
    """DistMult: x ∘ w_r."""

    name = "diagonal"

    def __init__(self, num_relations: int, dim: int):
        super().__init__(num_relations, dim)
        self.diagonal = nn.Parameter(torch.ones(num_relations, dim))

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        return x * gather_rows(self.diagonal, rel)

    adjoint = forward

    def relation_rows(self, rel: Tensor) -> Tensor:
        return gather_rows(self.diagonal, rel)


def _complex_mul(x: Tensor, re: Tensor, im: Tensor) -> Tensor:
    """x = [real half | imaginary half] times (re + i·im)."""
    xr, xi = x.chunk(2, dim=-1)
    return torch.cat([xr * re - xi * im, xr * im + xi * re], dim=-1)


class ComplexDiagonalOperator(Operator):
    """ComplEx: the first half of a vector is the real part, the second the imaginary one.

    With the dot comparator the score is Re(<h, w_r, conj(t)>).
    """

    name = "complex_diagonal"
    is_complex = True

    def __init__(self, num_relations: int, dim: int):
        super().__init__(num_relations, dim)
        half = dim // 2
        self.real = nn.Parameter(torch.ones(num_relations, half))
        self.imag = nn.Parameter(torch.zeros(num_relations, half))

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        return _complex_mul(x, gather_rows(self.real, rel), gather_rows(self.imag, rel))

    def adjoint(self, x: Tensor, rel: Tensor) -> Tensor:
        return _complex_mul(x, gather_rows(self.real, rel), -gather_rows(self.imag, rel))

    def relation_rows(self, rel: Tensor) -> Tensor:
        return torch.cat([gather_rows(self.real, rel), gather_rows(self.imag, rel)], dim=-1)


class RotateOperator(Operator):
    """RotatE: multiply by e^{iθ_r} (a rotation in each complex coordinate)."""

    name = "rotate"
    distance_inverse = True
    norm_preserving = True
    is_complex = True

    def __init__(self, num_relations: int, dim: int):
        super().__init__(num_relations, dim)
        self.phase = nn.Parameter(torch.zeros(num_relations, dim // 2))

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        phase = gather_rows(self.phase, rel)
        return _complex_mul(x, torch.cos(phase), torch.sin(phase))

    def adjoint(self, x: Tensor, rel: Tensor) -> Tensor:
        phase = gather_rows(self.phase, rel)
        return _complex_mul(x, torch.cos(phase), -torch.sin(phase))

    inverse = adjoint


class LinearOperator(Operator):
    """A full d×d matrix per relation: A_r x."""

    name = "linear"

    def __init__(self, num_relations: int, dim: int):
        super().__init__(num_relations, dim)
        self.matrix = nn.Parameter(torch.eye(dim).repeat(num_relations, 1, 1))

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        return (gather_rows(self.matrix, rel) @ x.unsqueeze(-1)).squeeze(-1)

    def adjoint(self, x: Tensor, rel: Tensor) -> Tensor:
        return (gather_rows(self.matrix, rel).transpose(-1, -2) @ x.unsqueeze(-1)).squeeze(-1)

    def relation_rows(self, rel: Tensor) -> Tensor:
        return gather_rows(self.matrix, rel).flatten(-2) / math.sqrt(self.dim)


class AffineOperator(LinearOperator):
    """A_r x + b_r."""

    name = "affine"

    def __init__(self, num_relations: int, dim: int):
        super().__init__(num_relations, dim)
        self.translation = nn.Parameter(torch.zeros(num_relations, dim))

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        return super().forward(x, rel) + gather_rows(self.translation, rel)

    def dot_bias(self, x: Tensor, rel: Tensor) -> Tensor:
        return (x * gather_rows(self.translation, rel)).sum(-1)


OPERATORS: dict[str, type[Operator]] = {
    op.name: op
    for op in (
        NoneOperator,
        TranslationOperator,
        DiagonalOperator,
        ComplexDiagonalOperator,
        RotateOperator,
        LinearOperator,
        AffineOperator,
    )
}
