"""Process-group setup from torchrun's environment, and shared-parameter synchronisation.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/MASTER_PORT (the
rendezvous Store) and TORCHELASTIC_RESTART_COUNT. A worker joins the process
group with NCCL when it trains on a GPU (one device per local rank) and gloo
on the CPU, always with a finite timeout, and opens its own client of the
rendezvous Store for the lock server, under a prefix naming the run and the
restart attempt (so a restarted job starts from a clean lock state and
rebuilds it from the durable progress on the shared filesystem).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bigkg.errors import BigKGError

log = logging.getLogger(__name__)


class DistributedSetupError(BigKGError):
    """The environment does not describe a usable torchrun worker."""


@dataclass(frozen=True)
class WorkerEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    restart_count: int
    run_id: str

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "WorkerEnv":
        env = dict(os.environ if environ is None else environ)

        def number(name: str, default: str | None = None) -> int:
            value = env.get(name, default)
            if value is None:
                raise DistributedSetupError(f"environment variable {name} is not set (start workers with torchrun)")
            try:
                return int(value)
            except ValueError:
                raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None

        return cls(
            rank=number("RANK"),
            world_size=number("WORLD_SIZE"),
            local_rank=number("LOCAL_RANK", "0"),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=number("MASTER_PORT"),
            restart_count=number("TORCHELASTIC_RESTART_COUNT", "0"),
            run_id=env.get("TORCHELASTIC_RUN_ID", "none"),
        )


def in_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Whether this process was started as one of several torchrun workers."""
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1")) > 1


def worker_device(requested: str, local_rank: int) -> torch.device:
    """The device of this worker: GPU ``local_rank`` for cuda/auto with CUDA, else the CPU."""
    wants_cuda = requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedSetupError(f"device: {requested!r} was asked for but CUDA is not available on this node")
    if local_rank >= torch.cuda.device_count():
        raise DistributedSetupError(
            f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
            "start at most one worker per GPU (--nproc-per-node)"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_process_group(env: WorkerEnv, device: torch.device, timeout: float) -> dist.Store:
    """Join the process group (NCCL on GPUs, gloo on CPU); returns the lock server's Store."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    delta = datetime.timedelta(seconds=timeout)
    dist.init_process_group(
        backend, rank=env.rank, world_size=env.world_size, timeout=delta,
        device_id=device if device.type == "cuda" else None,
    )
    log.info("joined the process group: %s, world size %d, device %s", backend, env.world_size, device)
    store = dist.TCPStore(env.master_addr, env.master_port, is_master=False, timeout=delta, wait_for_workers=False)
    return dist.PrefixStore(f"bigkg/{env.run_id}/attempt_{env.restart_count}", store)


def barrier(device: torch.device) -> None:
    """A barrier that works on gloo and NCCL alike (an all-reduce of one number)."""
    flag = torch.zeros(1, device=device)
    dist.all_reduce(flag)


class OptimizerSync:
    """Make the dense optimizer's state identical on every worker (at epoch ends).

    The shared parameters themselves move through the ``SharedParameterServer``
    after every bucket; the optimizer state (e.g. Adagrad's sums of squared
    gradients) stays with each worker during an epoch. At a synchronisation
    point every worker's change since the last one is summed and added to the
    common starting value, as if one process had made all the steps. A
    parameter whose state some worker has not created yet (Adam before its
    first step there) has its state dropped everywhere.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None):
        self.optimizer = optimizer
        self._base: list[torch.Tensor] | None = None
        params = [p for group in optimizer.param_groups for p in group["params"]] if optimizer is not None else []
        # NCCL reduces only GPU tensors, and Adagrad keeps its step count on the CPU.
        self.device = params[0].device if params else torch.device("cpu")

    def _tensors(self) -> list[torch.Tensor]:
        if self.optimizer is None:
            return []
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        have = torch.tensor([1.0 if self.optimizer.state.get(p) else 0.0 for p in params], device=self.device)
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
        tensors = []
        for p, everywhere in zip(params, have.tolist()):
            if not everywhere:
                self.optimizer.state.pop(p, None)
                continue
            state = self.optimizer.state[p]
            tensors += [state[k] for k in sorted(state) if torch.is_tensor(state[k]) and state[k].is_floating_point()]
        return tensors

    @torch.no_grad()
    def _flat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1).to(self.device, torch.float64) for t in tensors])

    @torch.no_grad()
    def mark(self) -> None:
        """Remember the current (identical) values as the base of the next sync."""
        self._base = [t.detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def sync(self) -> None:
        """Add every worker's change since ``mark`` to the base; then mark again."""
        tensors = self._tensors()
        if not tensors:
            return
        if self._base is None or [b.shape for b in self._base] != [t.shape for t in tensors]:
            # no common base (state created since): fall back to the mean
            flat = self._flat(tensors)
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
        else:
            base = self._flat(self._base)
            flat = self._flat(tensors) - base
            dist.all_reduce(flat)
            flat += base
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        self.mark()
