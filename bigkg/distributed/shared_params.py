"""A parameter server for the shared parameters, on the Store and the shared filesystem.

The shared parameters (relation operators, encoder weights) and their dense
optimizer state (e.g. Adagrad's sums) are small and every bucket updates them. Each version is a file ``exchange/shared/<id>.pt`` and one
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
    def __init__(self, store: Store, root: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None):
        self.store = store
        self.root = Path(root)
        self.model = model
        self.optimizer = optimizer
        self.version: str | None = None  # the version this worker's values derive from
        self._base: list[Tensor] = []

    def _tensors(self) -> list[Tensor]:
        """Parameters, floating buffers, then the optimizer's floating state once every parameter has one.

        (Adam creates its state at its first step: until then only the parameters travel.)
        """
        tensors = [p.data for p in self.model.parameters()] + [b for b in self.model.buffers() if b.is_floating_point()]
        if self.optimizer is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            if all(self.optimizer.state.get(p) for p in params):
                for p in params:
                    state = self.optimizer.state[p]
                    tensors += [state[k] for k in sorted(state) if torch.is_tensor(state[k]) and state[k].is_floating_point()]
        return tensors

    def _current(self) -> str:
        # compare_set of a key with itself reads it without blocking (it is created by ``publish``)
        return self.store.compare_set(CURRENT_KEY, "", "").decode()

    def _write(self, tensors: list[Tensor]) -> str:
        name = f"shared/{uuid.uuid4().hex}.pt"
        with atomic_file(self.root / name) as tmp:
            torch.save([t.detach().cpu() for t in tensors], tmp)
        return name

    def _read(self, name: str) -> list[Tensor]:
        # The arithmetic is done on the CPU: the tensors are small and may live on two devices.
        return torch.load(self.root / name, map_location="cpu", weights_only=True)

    @torch.no_grad()
    def _adopt(self, name: str, values: list[Tensor]) -> None:
        mine = self._tensors()
        # a version with optimizer state this worker has not created yet: take the parameters only
        for t, v in zip(mine, values):
            t.copy_(v)
        self._base = [t.detach().cpu().clone() for t in mine]
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
        # Optimizer state created since the pull has no base: it travels as is.
        delta = [t.detach().cpu() - b for t, b in zip(mine, self._base)] + [t.detach().cpu().clone() for t in mine[len(self._base):]]
        current = self._current()
        while True:
            values = self._base if current == self.version else self._read(current)
            merged = [v + d for v, d in zip(values, delta)] + delta[len(values):]
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
