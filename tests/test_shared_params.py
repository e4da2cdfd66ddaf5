"""The shared-parameter server on a real TCPStore and real files: two workers' models in one process."""

from __future__ import annotations

import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from bigkg.distributed.shared_params import SharedParameterServer


def worker(store: dist.TCPStore, root: Path, optimizer: bool = False) -> tuple[SharedParameterServer, nn.Linear]:
    client = dist.TCPStore("127.0.0.1", store.port, is_master=False, timeout=datetime.timedelta(seconds=30))
    model = nn.Linear(3, 2, bias=False)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1) if optimizer else None
    return SharedParameterServer(client, root, model, opt), model


def add(model: nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight += value


def test_concurrent_pushes_add_every_delta_once(store, tmp_path):
    a, model_a = worker(store, tmp_path)
    b, model_b = worker(store, tmp_path)
    with torch.no_grad():
        model_a.weight.fill_(1.0)
    a.publish()
    a.pull()
    b.pull()
    assert torch.equal(model_b.weight, torch.ones(2, 3))
    # both train from the same version; b pushes after a, loses the race and merges into a's version
    add(model_a, 1.0)
    add(model_b, 2.0)
    a.push()
    b.push()
    assert torch.equal(model_b.weight, torch.full((2, 3), 4.0))
    a.pull()
    assert torch.equal(model_a.weight, torch.full((2, 3), 4.0))


def test_consecutive_pushes_apply_each_change_once(store, tmp_path):
    """Two workers' pushes alternate without pulls between them: each merges the other's change, and a change already pushed is never added again."""
    a, model_a = worker(store, tmp_path)
    b, model_b = worker(store, tmp_path)
    with torch.no_grad():
        model_a.weight.zero_()
    a.publish()
    a.pull()
    b.pull()
    add(model_a, 1.0)
    a.push()
    add(model_b, 10.0)
    b.push()  # takes a's +1 into b's values
    add(model_a, 1.0)
    a.push()  # takes b's +10
    add(model_b, 100.0)
    b.push()
    assert torch.equal(model_b.weight, torch.full((2, 3), 112.0))
    a.pull()
    assert torch.equal(model_a.weight, torch.full((2, 3), 112.0))


def test_the_optimizer_state_travels_with_the_parameters(store, tmp_path):
    a, model_a = worker(store, tmp_path, optimizer=True)
    b, model_b = worker(store, tmp_path, optimizer=True)
    a.publish()
    a.pull()
    b.pull()
    model_a.weight.grad = torch.ones(2, 3)
    a.optimizer.step()
    a.push()
    b.pull()
    assert torch.equal(model_b.weight, model_a.weight)
    assert torch.equal(b.optimizer.state[model_b.weight]["sum"], torch.ones(2, 3))
