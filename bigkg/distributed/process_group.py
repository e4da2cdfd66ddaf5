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
# Imported before any group exists, on purpose: this module's functions take
# ``group=group.WORLD`` as a default argument, bound at import. Imported later
# (a process's first torch.optim optimizer imports it, through torch._dynamo),
# the defaults hold the live default group, destroy_process_group cannot free
# it, and gloo's threads are torn down at interpreter exit instead, which now
# and then aborts a finished worker ("terminate called without an active exception").
import torch.distributed.nn.functional  # noqa: F401

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
    """Join the process group (NCCL on GPUs, gloo on CPU); returns the lock server's Store.

    The group is built on our own client of the rendezvous Store, under a
    prefix naming the restart attempt: after a restart torch's default env://
    setup can read the peers' addresses of the previous attempt and fail to
    connect (pytorch/pytorch#167288).
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    delta = datetime.timedelta(seconds=timeout)
    # Under torchrun the agent hosts the Store; started by hand, rank 0 does.
    hosted_by_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        env.master_addr, env.master_port, env.world_size, is_master=not hosted_by_agent and env.rank == 0,
        timeout=delta, wait_for_workers=False,
    )
    attempt = f"bigkg/{env.run_id}/attempt_{env.restart_count}"
    dist.init_process_group(
        backend, store=dist.PrefixStore(f"{attempt}/pg", store), rank=env.rank, world_size=env.world_size,
        timeout=delta, device_id=device if device.type == "cuda" else None,
    )
    log.info("joined the process group: %s, world size %d, device %s", backend, env.world_size, device)
    return dist.PrefixStore(f"{attempt}/lock", store)


def barrier(device: torch.device) -> None:
    """A barrier that works on gloo and NCCL alike (an all-reduce of one number)."""
    flag = torch.zeros(1, device=device)
    dist.all_reduce(flag)
