"""Where quantized saved activations put their noise: per parameter, the cosine
and relative error of an encoder step's gradients at INT8/4/2/1 against exact
(FP32 node-level) saving, on FB15k-237.

The step is ``benchmarks/encoder.py``'s (encoder forward over the whole
training graph, a DistMult-style in-batch loss, backward). The entity table
enters as a leaf, as the trainer hands it over when it propagates over the
whole partition, so the first layer saves it by reference; ``--spliced`` gives
the encoder a copy instead, as the trainer does for a partition too large to
propagate whole (its rows with the batch's spliced in), and then the first
layer's input is quantized like any other.

Each quantized mode runs ``--draws`` times with different rounding noise (the
same weights and batch); the table gives the mean over draws.

    .venv/bin/python benchmarks/gradient_error.py --data ../shared/data/FB15k-237.tar.xz
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder import add_step_arguments, load_triples  # noqa: E402

from bigkg.device import set_cpu_threads  # noqa: E402
from bigkg.nn import EncoderSpec, Graph, build_encoder  # noqa: E402

MODES = ((8, "INT8"), (4, "INT4"), (2, "INT2"), (1, "INT1"))


def gradients(spec: EncoderSpec, graph: Graph, triples: torch.Tensor, args: argparse.Namespace, noise_seed: int) -> dict[str, torch.Tensor]:
    """Every parameter's gradient after one step, by name; weights, embeddings
    and batch come from ``args.seed``, the rounding noise from ``noise_seed``."""
    torch.manual_seed(args.seed)
    encoder = build_encoder(spec, args.dim, graph.base_relations)
    embeddings = torch.nn.Parameter(torch.randn(graph.num_nodes, args.dim) * 0.1)
    relations = torch.nn.Parameter(torch.randn(graph.base_relations, args.dim))
    batch = triples[torch.randperm(triples.shape[0])[: args.batch]]
    torch.manual_seed(noise_seed)
    out = encoder.encode(embeddings.clone() if args.spliced else embeddings, graph)
    h, r, t = batch.unbind(1)
    F.cross_entropy((out[h] * relations[r]) @ out[t].t(), torch.arange(batch.shape[0])).backward()
    named = {"entity embeddings": embeddings, "decoder relations": relations}
    named.update({f"encoder {name}": p for name, p in encoder.named_parameters()})
    return {name: p.grad.clone() for name, p in named.items() if p.grad is not None}


def compare(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """(cosine, ||g - ref|| / ||ref||) per parameter, and over all of them as one vector."""
    # float64: float32 sums over millions of entries give cosines above 1.
    pairs = {name: (grads[name].flatten().double(), reference[name].flatten().double()) for name in reference}
    pairs["all parameters"] = (torch.cat([g for g, _ in pairs.values()]), torch.cat([r for _, r in pairs.values()]))
    return {
        name: (float(F.cosine_similarity(g, r, dim=0)), float((g - r).norm() / r.norm().clamp_min(1e-30)))
        for name, (g, r) in pairs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--thresholds", default="1.0,1.1", help="delta_a per layer, e.g. 1.0,1.1, or 'dense'")
    parser.add_argument("--draws", type=int, default=3, help="rounding-noise draws per quantized mode")
    parser.add_argument("--spliced", action="store_true", help="encode a copy of the table (quantized in the first layer too)")
    args = parser.parse_args()
    if args.threads:
        set_cpu_threads(args.threads)
    thresholds = [] if args.thresholds == "dense" else [float(v) for v in args.thresholds.split(",")]

    triples, num_entities, num_relations = load_triples(args.data)
    graph = Graph(triples[:, 0], triples[:, 1], triples[:, 2], num_entities, num_relations)

    def spec(bits: int) -> EncoderSpec:
        return EncoderSpec(name="compgcn", layers=args.layers, quantize_bits=bits, message_thresholds=thresholds)

    reference = gradients(spec(32), graph, triples, args, noise_seed=0)
    results = {}
    for bits, _ in MODES:
        draws = [compare(gradients(spec(bits), graph, triples, args, noise_seed=1 + d), reference) for d in range(args.draws)]
        results[bits] = {name: tuple(statistics.mean(d[name][i] for d in draws) for i in (0, 1)) for name in draws[0]}

    print(f"# {args.data.name}: CompGCN (mult), {args.layers} layers, d={args.dim}, delta_a {args.thresholds}, "
          f"batch {args.batch}, mean of {args.draws} rounding draws; input {'a copy of the table' if args.spliced else 'the table (a leaf)'}; "
          "against exact (FP32 node-level) saving\n")
    print("| parameter | " + " | ".join(f"{label} cosine | {label} rel. error" for _, label in MODES) + " |")
    print("|---|" + "---:|---:|" * len(MODES))
    for name in results[MODES[0][0]]:
        cells = " | ".join(f"{results[bits][name][0]:.4f} | {results[bits][name][1]:.3f}" for bits, _ in MODES)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
