"""Partitioning throughput and memory: ``bigkg partition`` against PBG's ``torchbiggraph_import_from_tsv``.

A seeded power-law graph (default 20M edges, 1M entities, 100 relations) is
generated as Parquet and partitioned by bigkg with P=16. PBG's importer reads
only TSV and is pure Python, so it runs on the first ``--pbg-edges`` edges of
the same graph written as TSV; bigkg partitions that same TSV too, so the two
are also compared on identical input. Every tool runs as its own child
process; its peak RSS and CPU time come from ``os.wait4``.

PBG writes every bucket file with ~150 MB of preallocated HDF5 chunks, so
P=16 (256 buckets) costs ~38 GB of disk per run; ``--pbg-partitions``
(default 4) keeps it to ~2.4 GB. Fewer buckets only make PBG faster.

    .venv/bin/python benchmarks/partition.py [--edges N] [--pbg-edges N] [--workdir DIR]
    .venv/bin/python benchmarks/partition.py --dictionary    # how entity ids are built, compared
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pbg_env import pbg_command, write_pbg_config  # noqa: E402

from partitioner.generate import GraphSpec, generate_chunks, generate_graph  # noqa: E402



@dataclass
class Measurement:
    tool: str
    input: str
    edges: int
    partitions: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    output_mb: float


def measure(cmd: list[str], log: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB) of one child process; it must succeed."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def tree_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def write_tsv_prefix(parquet: Path, tsv: Path, edges: int) -> None:
    """The first ``edges`` rows of ``parquet`` as headerless TSV."""
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    written = 0
    tmp = tsv.with_suffix(".partial")
    with pcsv.CSVWriter(tmp, pq.ParquetFile(parquet).schema_arrow, write_options=options) as writer:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 20):
            batch = batch.slice(0, min(batch.num_rows, edges - written))
            writer.write_batch(batch)
            written += batch.num_rows
            if written == edges:
                break
    tmp.rename(tsv)


def run_bigkg(src: Path, out: Path, partitions: int, edges: int, label: str, repeat: int, logs: Path) -> Measurement:
    runs = []
    for k in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "launcher.cli", "partition", str(src), "--out", str(out), "-P", str(partitions)]
        runs.append(measure(cmd, logs / f"bigkg-{out.name}-{k}.log"))
    size = tree_mb(out)
    shutil.rmtree(out)
    wall, cpu, rss = (statistics.median(r[i] for r in runs) for i in range(3))
    return Measurement("bigkg", label, edges, partitions, wall, cpu, rss, size)


def run_pbg(tsv: Path, work: Path, partitions: int, edges: int, logs: Path) -> Measurement:
    out = work / "pbg-out"
    shutil.rmtree(out, ignore_errors=True)
    config = work / "pbg_config.py"
    write_pbg_config(config, entity_path=out, edge_path=out / "edges", checkpoint_path=work / "pbg-ckpt",
                     partitions=partitions, dimension=16)
    cmd = [str(pbg_command("torchbiggraph_import_from_tsv")), "--lhs-col", "0", "--rel-col", "1", "--rhs-col", "2",
           str(config), str(tsv)]
    wall, cpu, rss = measure(cmd, logs / "pbg.log")
    size = tree_mb(out)
    shutil.rmtree(out)
    return Measurement("PBG import_from_tsv", "TSV prefix", edges, partitions, wall, cpu, rss, size)


def dictionary_micro(names: int = 1_000_000, rows: int = 4_000_000) -> str:
    """Ways to map one batch of power-law entity names to dense ids (seconds, median of 3)."""
    import numpy as np
    import pyarrow.compute as pc

    from bigkg.strtable import StringTable

    column = next(generate_chunks(GraphSpec(rows, names, 10, seed=1), chunk_edges=rows)).column("head").combine_chunks()
    kinds = np.zeros(len(column), dtype=np.int32)

    def python_dict() -> None:
        ids: dict[str, int] = {}
        [ids.setdefault(x, len(ids)) for x in column.to_pylist()]

    def table_add() -> None:
        StringTable().add(column, kinds)

    filled = StringTable()
    filled.add(column, kinds)

    def arrow_then_table() -> None:
        encoded = pc.dictionary_encode(column)
        uniq = filled.find(encoded.dictionary, np.zeros(len(encoded.dictionary), np.int32))
        uniq[encoded.indices.to_numpy()]

    cases = [
        ("Python dict (insert)", python_dict),
        ("numba StringTable.add (insert)", table_add),
        ("numba StringTable.find (lookup)", lambda: filled.find(column, kinds)),
        ("pyarrow dictionary_encode + find on uniques (lookup)", arrow_then_table),
    ]
    lines = [f"{rows:,} names drawn from {names:,} (power law)", "", "| method | s | names/s |", "|---|---:|---:|"]
    for label, fn in cases:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        lines.append(f"| {label} | {t:.2f} | {rows / t:,.0f} |")
    return "\n".join(lines)


def table(rows: list[Measurement]) -> str:
    lines = [
        "| tool | input | edges | P | wall s | edges/s (wall) | CPU s | edges/s (CPU) | peak RSS MiB | output MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| {m.tool} | {m.input} | {m.edges:,} | {m.partitions} | {m.wall_s:.1f} | {m.edges / m.wall_s:,.0f} | "
            f"{m.cpu_s:.1f} | {m.edges / m.cpu_s:,.0f} | {m.peak_rss_mb:,.0f} | {m.output_mb:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=20_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--relations", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--pbg-edges", type=int, default=1_000_000, help="size of the TSV prefix given to PBG")
    parser.add_argument("--pbg-partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="bigkg runs per row (the median is reported)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bigkg-bench-partition"))
    parser.add_argument("--dictionary", action="store_true", help="only compare ways of building entity ids")
    args = parser.parse_args()
    if args.dictionary:
        print(dictionary_micro())
        return

    work = args.workdir
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    spec = GraphSpec(args.edges, args.entities, args.relations, seed=0)
    parquet = work / f"graph-{args.edges}-{args.entities}-{args.relations}.parquet"
    if not parquet.exists():
        generate_graph(spec, parquet)
    pbg_edges = min(args.pbg_edges, args.edges)
    tsv = work / f"graph-{args.edges}-{args.entities}-{args.relations}-first{pbg_edges}.tsv"
    if not tsv.exists():
        write_tsv_prefix(parquet, tsv, pbg_edges)

    rows = [
        run_bigkg(parquet, work / "bigkg-full", args.partitions, args.edges, "Parquet, full", args.repeat, logs),
        run_bigkg(tsv, work / "bigkg-prefix", args.partitions, pbg_edges, "TSV prefix", args.repeat, logs),
    ]
    if args.pbg_partitions != args.partitions:
        rows.append(run_bigkg(tsv, work / "bigkg-prefix-p", args.pbg_partitions, pbg_edges, "TSV prefix",
                              args.repeat, logs))
    pbg = run_pbg(tsv, work, args.pbg_partitions, pbg_edges, logs)
    rows.append(pbg)
    print(table(rows))
    same = next(m for m in rows if m.tool == "bigkg" and m.input == "TSV prefix" and m.partitions == pbg.partitions)
    full = rows[0]
    print()
    print(f"bigkg / PBG edges/s, same TSV and P={pbg.partitions}: wall {pbg.wall_s / same.wall_s * same.edges / pbg.edges:.1f}x, "
          f"CPU {pbg.cpu_s / same.cpu_s * same.edges / pbg.edges:.1f}x")
    print(f"bigkg full Parquet (P={full.partitions}) / PBG edges/s: wall "
          f"{(full.edges / full.wall_s) / (pbg.edges / pbg.wall_s):.1f}x, CPU "
          f"{(full.edges / full.cpu_s) / (pbg.edges / pbg.cpu_s):.1f}x; bigkg peak RSS {full.peak_rss_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
