"""KGNN encoder benchmark, part 1: saved-activation memory by bit width, and
propagation work and wall time dense vs sparsified, for a CompGCN encoder on
FB15k-237 (full-graph propagation, CPU or GPU).

One step = encoder forward over the whole training graph (both directions),
a DistMult-style loss over a batch of training triples with in-batch negatives,
and backward. Saved bytes are what autograd keeps for the encoder's backward,
counted exactly with saved-tensor hooks (distinct storages); integer index
tensors are reported apart from activations.

On CUDA (``--device cuda``) the clock stops only after the device has finished
(synchronised before and after each timed region), and each step's peak GPU
memory is torch.cuda.max_memory_allocated during the step minus what was
allocated when it began (graph, embeddings and weights of every configuration
stay resident). The fused numba edge kernel is CPU only: on the GPU the layers
run their recomputing torch edge stage, as the trainer does there.

    .venv/bin/python benchmarks/encoder.py --data ../shared/data/FB15k-237.tar.xz
    python3 benchmarks/encoder.py --data .device/data/FB15k-237.tar.xz --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bigkg.device import set_cpu_threads
from bigkg.nn import EncoderSpec, Graph, build_encoder
from bigkg.nn.data import read_triples
from bigkg.quant import SavedBytes


def load_triples(source: Path) -> tuple[torch.Tensor, int, int]:
    """Training triples of an unpacked dataset directory or a ``.tar.xz`` of one."""
    if source.is_dir():
        return read_triples(source / "train.txt")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(source) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/train.txt"))
        tar.extract(member, tmp, filter="data")
        return read_triples(Path(tmp) / member.name)


class Clock:
    """Wall time of a region and, on CUDA, its peak memory above what was
    allocated when it began; the device is synchronised at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self.peak_bytes: int | None = None

    def __enter__(self) -> "Clock":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._resident = torch.cuda.memory_allocated(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        if self.cuda:
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._resident


class Step:
    """One training step of an encoder configuration, measured."""

    def __init__(self, spec: EncoderSpec, graph: Graph, triples: torch.Tensor, dim: int, batch: int, seed: int) -> None:
        # Drawn on the CPU, then moved: every device starts from the same values.
        torch.manual_seed(seed)
        device = graph.device
        self.encoder = build_encoder(spec, dim, graph.base_relations).to(device)
        self.embeddings = torch.nn.Parameter((torch.randn(graph.num_nodes, dim) * 0.1).to(device))
        self.relations = torch.nn.Parameter(torch.randn(graph.base_relations, dim).to(device))
        self.graph = graph
        self.batch = triples[torch.randperm(triples.shape[0])[:batch]].to(device)
        self.targets = torch.arange(self.batch.shape[0], device=device)

    def run(self) -> tuple[Clock, SavedBytes]:
        params = [self.embeddings, self.relations, *self.encoder.parameters()]
        for p in params:
            p.grad = None
        self.encoder.counter.reset()
        with Clock(self.graph.device) as clock:
            with SavedBytes(params, self.graph.edges().tensors()) as saved:
                out = self.encoder.encode(self.embeddings, self.graph)
            h, r, t = self.batch.unbind(1)
            scores = (out[h] * self.relations[r]) @ out[t].t()
            loss = F.cross_entropy(scores, self.targets)
            loss.backward()
        return clock, saved


def measure(specs: list[EncoderSpec], graph: Graph, triples: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    """Measure configurations together: their runs are interleaved, round by
    round, so that load from other processes falls on all of them alike."""
    steps = [Step(spec, graph, triples, args.dim, args.batch, args.seed) for spec in specs]
    for step in steps:
        step.run()  # warm-up
    times: list[list[float]] = [[] for _ in steps]
    peaks: list[list[int]] = [[] for _ in steps]
    saved = [None] * len(steps)
    for _ in range(args.repeats):
        for i, step in enumerate(steps):
            clock, saved[i] = step.run()
            times[i].append(clock.seconds)
            if clock.peak_bytes is not None:
                peaks[i].append(clock.peak_bytes)
    return [
        {
            "time": statistics.median(t),
            "peak": max(p) if p else None,
            "activations": s.report.activations,
            "indices": s.report.indices,
            "propagation": step.encoder.counter["propagation"],
            "transform": step.encoder.counter["transform"],
            "kept": list(step.encoder.kept_edges),
        }
        for step, t, p, s in zip(steps, times, peaks, saved)
    ]


def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def peak_cell(result: dict) -> str:
    """The peak GPU memory column's cell ('' on the CPU, where the column is absent)."""
    return "" if result["peak"] is None else f" {mib(result['peak'])} |"


def parse_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        parser.error(f"--device {name!r}: {e}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {name!r}: choose cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {name!r}: CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            parser.error(f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        torch.zeros(1, device=device)  # the CUDA context, once, before any clock starts
    return device


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define the measured step (shared with gradient_error.py)."""
    parser.add_argument("--data", type=Path, default=Path("../shared/data/FB15k-237.tar.xz"))
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and numba threads, as training.threads sets them (0: their defaults)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--thresholds", nargs="+", default=["1.0,1.1", "2.5,1.0"],
                        help="settings of delta_a per layer for the sparsified runs, e.g. 1.0,1.1")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    if args.threads:
        set_cpu_threads(args.threads)
    device = parse_device(parser, args.device)
    cuda = device.type == "cuda"

    triples, num_entities, num_relations = load_triples(args.data)
    graph = Graph(triples[:, 0], triples[:, 1], triples[:, 2], num_entities, num_relations).to(device)
    on = f", device {device} ({torch.cuda.get_device_name(device)})" if cuda else ""
    print(f"# {args.data.name}: {num_entities} entities, {num_relations} relations, {len(graph)} edges with reciprocals; "
          f"CompGCN (mult), {args.layers} layers, d={args.dim}, batch {args.batch}, median of {args.repeats}, torch threads {torch.get_num_threads()}{on}")
    if cuda:
        print("# peak GPU MiB: the step's peak allocation above what was resident when it began (max over the timed runs)")

    settings = [[float(v) for v in t.split(",")] for t in args.thresholds]

    def spec(bits: int, thresholds: list[float] | None = None) -> EncoderSpec:
        return EncoderSpec(name="compgcn", layers=args.layers, quantize_bits=bits, message_thresholds=thresholds or [])

    print("\n## Saved activations per step (dense propagation)\n")
    gpu_head, gpu_rule = (" peak GPU MiB |", "---:|") if cuda else ("", "")
    print(f"| mode | activations MiB | index MiB | FP32 plain / mode | FP32 node-level / mode |{gpu_head}")
    print(f"|---|---:|---:|---:|---:|{gpu_rule}")
    modes = [("FP32 (plain autograd)", 0), ("FP32 node-level", 32), ("INT8", 8), ("INT4", 4), ("INT2", 2), ("INT1", 1)]
    results: dict[tuple[int, int | None], dict] = {}
    for name, bits in modes:
        # Dense and sparsified runs of a mode are timed together (interleaved).
        runs = measure([spec(bits)] + [spec(bits, t) for t in settings] if bits in (0, 32, 2) else [spec(bits)], graph, triples, args)
        for i, r in enumerate(runs):
            results[(bits, None if i == 0 else i)] = r
    for name, bits in modes:
        r = results[(bits, None)]
        print(f"| {name} | {mib(r['activations'])} | {mib(r['indices'])} | "
              f"{results[(0, None)]['activations'] / r['activations']:.1f}x | {results[(32, None)]['activations'] / r['activations']:.1f}x |"
              f"{peak_cell(r)}")

    timed = (("FP32 plain autograd", 0), ("FP32 node-level", 32), ("INT2", 2))
    print("\n## Encoder step, dense vs sparsified\n")
    print(f"| mode | delta_a | edges per layer (pruned) | propagation MMAC | transform MMAC | fwd+bwd s | activations MiB | index MiB |{gpu_head}")
    print(f"|---|---|---|---:|---:|---:|---:|---:|{gpu_rule}")
    for name, bits in timed:
        for i, thresholds in enumerate([None, *settings]):
            r = results[(bits, None if thresholds is None else i)]
            kept = " / ".join(f"{k} ({100 * (1 - k / len(graph)):.1f}%)" for k in r["kept"])
            label = "dense" if thresholds is None else ", ".join(map(str, thresholds))
            print(f"| {name} | {label} | {kept} | {r['propagation'] / 1e6:.0f} | {r['transform'] / 1e6:.0f} | "
                  f"{r['time']:.3f} | {mib(r['activations'])} | {mib(r['indices'])} |{peak_cell(r)}")
    print()
    for name, bits in timed:
        dense = results[(bits, None)]
        for i, thresholds in enumerate(settings, 1):
            sparse = results[(bits, i)]
            print(f"- {name}, delta_a {thresholds}: propagation MACs {dense['propagation'] / sparse['propagation']:.1f}x fewer, "
                  f"fwd+bwd {dense['time'] / sparse['time']:.2f}x faster")
    base = results[(0, None)]
    for key, label in (((32, None), "FP32 node-level dense"), ((2, None), "INT2 dense"), ((2, 1), "INT2 sparsified (first setting)")):
        print(f"- {label} vs FP32 plain autograd dense: {base['time'] / results[key]['time']:.2f}x faster, "
              f"{base['activations'] / results[key]['activations']:.1f}x fewer saved activation bytes"
              + (f", {base['peak'] / results[key]['peak']:.1f}x lower peak GPU memory" if cuda else ""))

    print("\n## Edge stage alone (gather, compose, weight, scatter; fwd+bwd), per layer\n")
    print("| mode | delta_a | layer | edges | dense s | kept s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, bits in (("FP32 node-level", 32), ("INT2", 2)):
        for thresholds in settings:
            for depth, edges, dense_s, kept_s in edge_stage_times(spec(bits, thresholds), graph, args):
                print(f"| {name} | {', '.join(map(str, thresholds))} | {depth} | {edges} | {dense_s:.3f} | {kept_s:.3f} | {dense_s / kept_s:.1f}x |")


def edge_stage_times(spec: EncoderSpec, graph: Graph, args: argparse.Namespace) -> list[tuple[int, int, float, float]]:
    """Per layer: (depth, kept edges, seconds over all edges, seconds over the kept edges)."""
    torch.manual_seed(args.seed)
    device = graph.device
    encoder = build_encoder(spec, args.dim, graph.base_relations).to(device)
    h = (torch.randn(graph.num_nodes, args.dim) * 0.1).to(device)
    all_edges = edges = graph.edges()
    rows = []
    for layer in encoder.layers:
        leaf = h.detach().requires_grad_()
        x = leaf * 1.0  # a non-leaf input, quantized like a hidden layer's

        def run(edge_set):
            with Clock(device) as clock:
                layer.aggregate(x, edge_set)[0].sum().backward(retain_graph=True)
            return clock.seconds

        kept = layer.prune(x.detach(), edges)
        run(kept)  # warm-up
        pairs = [(run(all_edges), run(kept)) for _ in range(args.repeats)]
        rows.append((layer.depth, len(kept), statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)))
        with torch.no_grad():
            h, edges = layer(h, edges)
    return rows


if __name__ == "__main__":
    main()
