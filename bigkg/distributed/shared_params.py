"""A parameter server for the shared parameters, on the Store and the shared filesystem.

The shared parameters (relation operators, encoder weights) are small and every
bucket updates them. Each version is a file ``exchange/shared/<id>.pt`` and one
Store key names the current one. A worker pulls the current version when it
starts a bucket and, after the bucket, pushes its change: it adds its delta
(its values minus the version it pulled) to the current version, writes the
sum as a new file and swaps the key with ``compare_set``; if another worker
pushed meanwhile, it adds the delta to that newer version and tries again. No
update is lost and none is applied twice, and no worker ever waits for a lock.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.distributed import Store

from bigkg.atomic import atomic_file

CURRENT_KEY = "shared/current"


class SharedParameterServer:
    def __init__(self, store: Store, root: str | Path, model: nn.Module):
        self.store = store
        self.root = Path(root)
        self.model = model
        self.version: str | None = None  # the version this worker's values derive from
        self._base: list[Tensor] = []

    def _tensors(self) -> list[Tensor]:
        return [p.data for p in self.model.parameters()] + [b for b in self.model.buffers() if b.is_floating_point()]

    def _current(self) -> str:
        # compare_set of a key with itself reads it without blocking (it is created by ``publish``)
        return self.store.compare_set(CURRENT_KEY, "", "").decode()

    def _write(self, tensors: list[Tensor]) -> str:
        name = f"shared/{uuid.uuid4().hex}.pt"
        with atomic_file(self.root / name) as tmp:
            torch.save([t.detach().cpu() for t in tensors], tmp)
        return name

    def _read(self, name: str) -> list[Tensor]:
        device = self._tensors()[0].device
        return [t.to(device) for t in torch.load(self.root / name, map_location="cpu", weights_only=True)]

    @torch.no_grad()
    def _adopt(self, name: str, values: list[Tensor]) -> None:
        for t, v in zip(self._tensors(), values):
            t.copy_(v)
        self._base = [v.clone() for v in values]
        self.version = name

    def publish(self, name: str | None = None) -> str:
        """Make ``name`` (or this worker's current values, written now) the current version."""
        if not self._tensors():
            return ""
        name = name or self._write(self._tensors())
        self.store.set(CURRENT_KEY, name)
        return name

    @torch.no_grad()
    def pull(self) -> None:
        """Take the current version unless this worker already has it."""
        if not self._tensors():
            return
        name = self._current()
        if name != self.version:
            self._adopt(name, self._read(name))

    @torch.no_grad()
    def push(self) -> str:
        """Add this worker's change since its pull to the current version; returns the new version."""
        mine = self._tensors()
        if not mine:
            return ""
        delta = [t - b for t, b in zip(mine, self._base)]
        current = self._current()
        while True:
            values = self._base if current == self.version else self._read(current)
            merged = [v + d for v, d in zip(values, delta)]
            name = self._write(merged)
            swapped = self.store.compare_set(CURRENT_KEY, current, name).decode()
            if swapped == name:
                self._adopt(name, merged)
                return name
            (self.root / name).unlink(missing_ok=True)  # lost the race: merge into the newer version
            current = swapped

    def collect(self) -> None:
        """Remove versions other than the current one (only between epochs, when nobody pushes)."""
        keep = self._current()
        folder = self.root / "shared"
        if folder.is_dir():
            for path in folder.iterdir():
                if f"shared/{path.name}" != keep:
                    path.unlink(missing_ok=True)
