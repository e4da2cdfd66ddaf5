"""Training speed and quality of bigkg against PyTorch-BigGraph 1.0.0 on the same machine.

One seeded power-law graph (partitioner.generate) is split into train and test
edges once; both systems train on the same train edges with the same settings
(d=100, no relation operator, dot, softmax, 50 batch + 50 uniform negatives,
batch 1000, lr 0.1, P partitions, `--epochs` epochs, workers = cores, PBG with
hogwild_delay=0) and both are scored by the same code: every test edge's tail
(and head) is ranked against the same uniformly sampled candidate entities,
from each system's embeddings looked up by entity name. PBG reads bigkg's partitioned
dataset written in its own input format (benchmarks/pbg_env.py, ``write_pbg_input``):
the same partitions for both, and seconds instead of its importer's minutes.

    .venv/bin/python benchmarks/vs_pbg.py --edges 1000000 --entities 100000 --epochs 5 --repeats 3
    python3 benchmarks/vs_pbg.py --device cuda --pbg-site /tmp/pbg-site      # bigkg on the GPU

With ``--device cuda`` bigkg trains on the GPU (one worker); PBG 1.0.0, whose only
release has no GPU mode, trains on the CPU with ``--workers`` workers, so the GPU row
compares bigkg's GPU with PBG's best on that machine.

PBG runs from its own virtual environment (benchmarks/pbg_env.py: `--pbg-venv`,
$BIGKG_PBG_VENV or /work/pbg-venv) or from a site directory of its wheels
(`--pbg-site`, $BIGKG_PBG_SITE) on a machine without network access. Edges/s is
train edges × epochs / wall time of the training command (process start to exit,
checkpoints included); edges/CPU-s divides by the CPU time (user + system) of that
command and its children, which is steadier than wall time on a machine shared with
other work; in-loop edges/s is each system's own count of its bucket training time
(bigkg's summary, PBG's "Processed N edges in T s" log lines).

The sampled MRR of one training run moves by ±0.002 with the seed (bigkg's
seeds 0-3 gave 0.0397-0.0422 at P=1; PBG, which has no seed option, 0.0407-0.0427
over four runs that differed in its Hogwild workers' timing only), so
``--repeats`` trains both systems several times and the summary compares medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import h5py
import numpy as np
import pyarrow.csv as pcsv

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.checkpoint import CheckpointStore  # noqa: E402
from bigkg.format import load_manifest, read_entity_names  # noqa: E402
from benchmarks.pbg_env import PBG, in_loop_rate, locate_pbg, write_pbg_config, write_pbg_input  # noqa: E402
from partitioner.generate import GraphSpec, generate_graph  # noqa: E402


def timed(command: list[str], log: Path, **kwargs) -> tuple[float, float]:
    """Run ``command`` with its output in ``log``; (wall seconds, CPU seconds of it and its descendants)."""
    # Write back what earlier commands left dirty first. PBG writes its checkpoints
    # without fsync, bigkg fsyncs each commit, and on ext4 an fsync waits for the
    # file system's other dirty data: untreated, bigkg's first commit after a PBG run
    # paid for PBG's writeback (a 35 s run of 19 s of training, 13 s of it iowait).
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "wb") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}; its output is in {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_graph(work: Path, edges: int, entities: int, relations: int, test_edges: int, seed: int) -> tuple[Path, Path]:
    """train.tsv and test.tsv: the generated graph with a seeded test sample held out."""
    full = generate_graph(GraphSpec(edges=edges, entities=entities, relations=relations, seed=seed), work / "graph.tsv")
    table = pcsv.read_csv(full, read_options=pcsv.ReadOptions(column_names=["h", "r", "t"]),
                          parse_options=pcsv.ParseOptions(delimiter="\t"))
    rng = np.random.default_rng(seed)
    is_test = np.zeros(table.num_rows, dtype=bool)
    is_test[rng.choice(table.num_rows, test_edges, replace=False)] = True
    paths = []
    for name, mask in (("train", ~is_test), ("test", is_test)):
        path = work / f"{name}.tsv"
        pcsv.write_csv(table.filter(mask), path, write_options=pcsv.WriteOptions(include_header=False, delimiter="\t",
                                                                                     quoting_style="none"))
        paths.append(path)
    return paths[0], paths[1]


def read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(column_names=["h", "r", "t"]),
                          parse_options=pcsv.ParseOptions(delimiter="\t"))
    return np.asarray(table.column("h").to_pylist(), dtype=object), np.asarray(table.column("t").to_pylist(), dtype=object)


def sampled_mrr(vectors: dict[str, np.ndarray], heads: np.ndarray, tails: np.ndarray, names: np.ndarray,
                candidates: np.ndarray) -> float:
    """Raw MRR over both directions: each test edge's true tail (head) against the sampled
    candidate entities ``candidates`` [n, K] (indices into ``names``), dot product scores."""
    table = np.stack([vectors[n] for n in names]).astype(np.float32)
    index = {n: k for k, n in enumerate(names)}
    h = np.array([index[x] for x in heads])
    t = np.array([index[x] for x in tails])
    reciprocal = []
    for anchor, answer in ((h, t), (t, h)):
        a = table[anchor]
        true = np.einsum("nd,nd->n", a, table[answer])
        cand = np.einsum("nd,nkd->nk", a, table[candidates])
        reciprocal.append(1.0 / (1 + (cand > true[:, None]).sum(1)))
    return float(np.concatenate(reciprocal).mean())


# -- bigkg --------------------------------------------------------------------------------
def partition_bigkg(work: Path, train: Path, test: Path, partitions: int) -> Path:
    """bigkg's dataset of the graph, made once per P and trained on by every repeat."""
    data = work / f"bigkg_p{partitions}"
    subprocess.run([sys.executable, "-m", "launcher.cli", "partition", str(train), "--test", str(test), "--out", str(data),
                    "-P", str(partitions), "--force", "--no-progress"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return data


def run_bigkg(work: Path, data: Path, epochs: int, workers: int, device: str,
              seed: int) -> tuple[float, float, dict[str, np.ndarray], dict]:
    """bigkg's training from scratch: (wall s, CPU s, vectors by entity name, its summary)."""
    manifest = load_manifest(data)
    run_dir = work / f"bigkg_run_p{manifest.num_partitions}"
    summary_path = work / f"bigkg_summary_p{manifest.num_partitions}.json"
    # On a GPU one worker: Hogwild threads only contend for the same device.
    wall, cpu = timed([sys.executable, "-m", "launcher.cli", "train", str(REPO / "benchmarks" / "configs" / "vs_pbg.yaml"),
                       "--fresh", "--set", f"dataset={data}", "--set", f"run_dir={run_dir}",
                       "--set", f"training.epochs={epochs}", "--set", f"device={device}",
                       "--set", f"training.workers={1 if device != 'cpu' else workers}", "--set", f"seed={seed}",
                       "--json", str(summary_path)], work / f"bigkg_train_p{manifest.num_partitions}.log", cwd=REPO)
    version = CheckpointStore(run_dir).latest()
    vectors: dict[str, np.ndarray] = {}
    for p in range(manifest.num_partitions):
        emb = version.load_partition("entity", p)[0].numpy()
        for name, row in zip(read_entity_names(data, "entity", p).to_pylist(), emb):
            vectors[name] = row
    return wall, cpu, vectors, json.loads(summary_path.read_text())


# -- PBG ----------------------------------------------------------------------------------


def prepare_pbg(work: Path, dataset: Path, partitions: int, epochs: int, workers: int) -> Path:
    """PBG's config and its input, bigkg's ``dataset`` of P partitions written in PBG's
    format (the same partitions for both systems), made once per P; returns the config."""
    root = work / f"pbg_p{partitions}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = root / "config.py"
    write_pbg_config(
        config, entity_path=root / "entities", edge_path=root / "edges", checkpoint_path=root / "model",
        partitions=partitions, global_emb=False, dimension=100, comparator="dot", loss_fn="softmax",
        num_batch_negs=50, num_uniform_negs=50, batch_size=1000, lr=0.1, num_epochs=epochs, workers=workers,
        hogwild_delay=0, eval_fraction=0)
    write_pbg_input(dataset, root / "entities", root / "edges")
    return config


def run_pbg(config: Path, pbg: PBG, partitions: int) -> tuple[float, float, float | None, dict[str, np.ndarray]]:
    """PBG's CPU training from scratch: (wall s, CPU s, in-loop edges/s, vectors by entity name)."""
    root = config.parent
    shutil.rmtree(root / "model", ignore_errors=True)  # PBG resumes from a checkpoint it finds: start afresh
    log = root / "train.log"
    wall, cpu = timed(pbg.command("torchbiggraph_train") + [str(config)], log, env=pbg.env())
    version = int((root / "model" / "checkpoint_version.txt").read_text().strip())
    vectors: dict[str, np.ndarray] = {}
    for p in range(partitions):
        names = json.loads((root / "entities" / f"entity_names_all_{p}.json").read_text())
        with h5py.File(root / "model" / f"embeddings_all_{p}.v{version}.h5", "r") as fh:
            emb = fh["embeddings"][...]
        vectors.update(zip(names, emb))
    return wall, cpu, in_loop_rate(log.read_text(errors="replace")), vectors


@dataclass
class Trial:
    """One system pair trained once at one P on ``edges`` edges (train edges x epochs)."""

    edges: int
    bigkg_wall: float  # s of the training command, process start to exit
    pbg_wall: float
    bigkg_cpu: float  # CPU s of it and its children
    pbg_cpu: float
    bigkg_mrr: float
    pbg_mrr: float
    bigkg_loop: float  # each system's own in-loop edges/s
    pbg_loop: float | None


def median_trial(trials: list[Trial]) -> Trial:
    """Field by field medians (PBG's in-loop rate: of the repeats that logged it)."""
    loops = [t.pbg_loop for t in trials if t.pbg_loop]
    return Trial(**{f.name: statistics.median(getattr(t, f.name) for t in trials) for f in fields(Trial) if f.name != "pbg_loop"},
                 pbg_loop=statistics.median(loops) if loops else None)


def table_row(label: str, t: Trial) -> str:
    rates = [t.edges / s for s in (t.bigkg_wall, t.pbg_wall, t.bigkg_cpu, t.pbg_cpu)]
    loop_ratio = f"{t.bigkg_loop / t.pbg_loop:.2f}×" if t.pbg_loop else "-"
    return (f"| {label} | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[0] / rates[1]:.2f}× | {rates[2]:,.0f} "
            f"| {rates[3]:,.0f} | {rates[2] / rates[3]:.2f}× | {t.bigkg_mrr:.4f} | {t.pbg_mrr:.4f} "
            f"| {t.bigkg_loop:,.0f} | {t.pbg_loop or 0:,.0f} | {loop_ratio} | {t.bigkg_wall:.1f} | {t.pbg_wall:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--relations", type=int, default=1)
    parser.add_argument("--test-edges", type=int, default=5_000)
    parser.add_argument("--candidates", type=int, default=1000, help="sampled candidates per test query")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=1,
                        help="train both systems this many times per P (bigkg with seeds seed, seed+1, ...; PBG has no "
                             "seed option: its runs differ through its Hogwild workers' timing only); the summary "
                             "table gives the medians")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="CPU workers of PBG, and of bigkg on the CPU (default: the cores)")
    parser.add_argument("--device", default="cpu", help="bigkg's device: cpu or cuda[:N] (PBG 1.0.0 trains on the CPU)")
    parser.add_argument("--pbg-venv", type=Path, help="PBG's venv (default: benchmarks/pbg_env.py's, /work/pbg-venv)")
    parser.add_argument("--pbg-site", type=Path, help="PBG's wheels installed with pip --target here, run on this python "
                                                      "(default: $BIGKG_PBG_SITE; else the venv)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bigkg_vs_pbg"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the graph, the test split and the candidates; "
                                                            "bigkg's training seed of the first repeat")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    pbg = locate_pbg(args.pbg_venv, args.pbg_site)
    train, test = make_graph(args.work, args.edges, args.entities, args.relations, args.test_edges, args.seed)
    train_edges = args.edges - args.test_edges
    heads, tails = read_tsv(test)
    datasets = {p: partition_bigkg(args.work, train, test, p) for p in args.partitions}
    pbg_configs = {p: prepare_pbg(args.work, datasets[p], p, args.epochs, args.workers) for p in args.partitions}
    trials: dict[int, list[Trial]] = {p: [] for p in args.partitions}
    for repeat in range(args.repeats):
        for partitions in args.partitions:
            b_wall, b_cpu, b_vectors, b_summary = run_bigkg(args.work, datasets[partitions], args.epochs, args.workers,
                                                            args.device, args.seed + repeat)
            p_wall, p_cpu, p_loop, p_vectors = run_pbg(pbg_configs[partitions], pbg, partitions)
            # Same test edges and same sampled candidates for both (entities known to both).
            names = np.array(sorted(set(b_vectors) & set(p_vectors)), dtype=object)
            known = np.array([h in b_vectors and t in b_vectors and h in p_vectors and t in p_vectors
                              for h, t in zip(heads, tails)])
            rng = np.random.default_rng(args.seed + 1)
            candidates = rng.integers(0, len(names), size=(int(known.sum()), args.candidates))
            trial = Trial(
                edges=train_edges * args.epochs, bigkg_wall=b_wall, pbg_wall=p_wall, bigkg_cpu=b_cpu, pbg_cpu=p_cpu,
                bigkg_mrr=sampled_mrr(b_vectors, heads[known], tails[known], names, candidates),
                pbg_mrr=sampled_mrr(p_vectors, heads[known], tails[known], names, candidates),
                bigkg_loop=b_summary["edges_per_s"], pbg_loop=p_loop,
            )
            trials[partitions].append(trial)
            print(f"repeat {repeat + 1}, P={partitions}: bigkg {trial.edges / b_wall:,.0f} edges/s (in-loop "
                  f"{trial.bigkg_loop:,.0f}; {trial.edges / b_cpu:,.0f} per CPU-s), PBG {trial.edges / p_wall:,.0f} "
                  f"edges/s (in-loop {p_loop or 0:,.0f}; {trial.edges / p_cpu:,.0f} per CPU-s), "
                  f"MRR {trial.bigkg_mrr:.4f} vs {trial.pbg_mrr:.4f}", flush=True)

    print(f"\ngraph: {args.edges:,} edges ({train_edges:,} train, {int(known.sum()):,} test ranked), "
          f"{args.entities:,} entities, {args.relations} relation(s); {args.epochs} epochs; "
          f"bigkg on {args.device}{'' if args.device != 'cpu' else f' with {args.workers} workers'}, "
          f"PBG 1.0.0 on the CPU with {args.workers} workers ({pbg.describe()}); "
          f"sampled MRR: {args.candidates} uniform candidates per query, both directions, raw; "
          f"{args.repeats} repeat(s), bigkg seeds {args.seed}..{args.seed + args.repeats - 1}\n")
    header = ("| bigkg edges/s | PBG edges/s | ratio | bigkg edges/CPU-s | PBG edges/CPU-s | ratio | bigkg MRR | PBG MRR "
              "| bigkg in-loop edges/s | PBG in-loop edges/s | in-loop ratio | bigkg wall s | PBG wall s |")
    rule = "|---" * 15 + "|"
    if args.repeats > 1:
        print("| P, repeat " + header + "\n" + rule)
        for partitions, runs in trials.items():
            for repeat, trial in enumerate(runs):
                print(table_row(f"{partitions}, {repeat + 1}", trial))
        print("\nMedians over the repeats (rates and ratios from the median seconds):\n")
    print("| P " + header + "\n" + rule)
    for partitions, runs in trials.items():
        print(table_row(str(partitions), median_trial(runs)))


if __name__ == "__main__":
    main()
