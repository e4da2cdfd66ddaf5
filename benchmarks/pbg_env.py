"""PyTorch-BigGraph in its own environment, for side-by-side benchmarks.

PBG pins old dependencies, so it never shares bigkg's environment. It runs
from one of two places:

- a venv, created once (``python3 -m venv DIR`` then pip installs torch,
  torchbiggraph and a setuptools PBG still imports) and marked complete by a
  ``.ready`` file; later calls reuse it. DIR is ``/work/pbg-venv`` unless
  ``BIGKG_PBG_VENV`` or the ``venv`` argument says otherwise.
- a site directory (``BIGKG_PBG_SITE`` or the ``site`` argument): wheels
  installed with ``pip install --no-index --no-deps --target SITE`` on a
  machine without network access (benchmarks/prepare_device.sh fetches
  them). PBG then runs on this interpreter and its torch, with SITE first on
  PYTHONPATH for PBG's processes only.

torchbiggraph 1.0.0, the only release on PyPI, is pure Python (a
``py3-none-any`` wheel needing attrs, h5py, numpy, setuptools, torch, tqdm) and
trains on CPU only: PBG's GPU mode (``num_gpus``, ``torchbiggraph_train_gpu``)
exists only in its unreleased source tree, built with a C++ extension.

    python benchmarks/pbg_env.py            # create (if needed) and print the venv path
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.format import load_manifest, read_bucket, read_entity_names  # noqa: E402

DEFAULT_VENV = Path("/work/pbg-venv")
PACKAGES = ["torch==2.13.0", "torchbiggraph", "setuptools<81"]
READY = ".ready"
# PBG's console scripts and the modules behind them (each runs with ``python -m``).
MODULES = {
    "torchbiggraph_import_from_tsv": "torchbiggraph.converters.import_from_tsv",
    "torchbiggraph_train": "torchbiggraph.train",
}
# PBG 1.0.0 logs one line per trained bucket: "... Processed N edges in T s ( ... M/sec ); io: ..."
BUCKET_LINE = re.compile(r"Processed (\d+) edges in ([0-9.]+) s")


def venv_dir(venv: str | Path | None = None) -> Path:
    return Path(venv or os.environ.get("BIGKG_PBG_VENV") or DEFAULT_VENV)


def ensure_pbg_venv(venv: str | Path | None = None) -> Path:
    """The PBG venv, created and installed first if it is not ready."""
    root = venv_dir(venv)
    if (root / READY).is_file():
        return root
    subprocess.run(["python3", "-m", "venv", str(root)], check=True)
    subprocess.run([str(root / "bin" / "pip"), "install", *PACKAGES], check=True)
    (root / READY).write_text(" ".join(PACKAGES) + "\n")
    return root


def pbg_command(name: str, venv: str | Path | None = None) -> Path:
    """Path of one of PBG's console scripts in its venv, e.g. ``torchbiggraph_import_from_tsv``."""
    path = ensure_pbg_venv(venv) / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is torchbiggraph installed in {path.parent.parent}?")
    return path


@dataclass(frozen=True)
class PBG:
    """How to start PBG's tools: an interpreter, and a site directory to put first on its path."""

    python: Path
    site: Path | None = None

    def command(self, tool: str) -> list[str]:
        """The argv prefix of one of PBG's tools, named as its console script."""
        return [str(self.python), "-m", MODULES[tool]]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.site is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), env.get("PYTHONPATH", "")) if p)
        return env

    def describe(self) -> str:
        return f"site {self.site} on {self.python}" if self.site else f"venv {self.python.parent.parent}"


def locate_pbg(venv: str | Path | None = None, site: str | Path | None = None) -> PBG:
    """PBG from a site directory when one is given (argument or ``BIGKG_PBG_SITE``), else from its venv."""
    site = site or os.environ.get("BIGKG_PBG_SITE")
    if site:
        site = Path(site)
        if not (site / "torchbiggraph").is_dir():
            raise FileNotFoundError(
                f"{site} holds no torchbiggraph package; install the wheels fetched by "
                f"benchmarks/prepare_device.sh with 'pip install --no-index --no-deps --target {site} .device/wheels/*.whl'"
            )
        return PBG(Path(sys.executable), site)
    return PBG(ensure_pbg_venv(venv) / "bin" / "python")


def in_loop_rate(log: str) -> float | None:
    """Edges per second of PBG's bucket training alone (its "Processed N edges in T s" lines), or None."""
    pairs = [(int(n), float(s)) for n, s in BUCKET_LINE.findall(log)]
    seconds = sum(s for _, s in pairs)
    return sum(n for n, _ in pairs) / seconds if seconds > 0 else None


def write_pbg_config(path: Path, *, entity_path: Path, edge_path: Path, checkpoint_path: Path,
                     partitions: int, operator: str = "none", **settings: object) -> None:
    """A PBG config file: one entity type "all", one relation with ``operator``
    (dynamic relations: each relation type of the input gets its own parameters,
    for heads and tails apart), plus ``settings`` (dimension, loss_fn, workers...)."""
    config = dict(
        entity_path=str(entity_path),
        edge_paths=[str(edge_path)],
        checkpoint_path=str(checkpoint_path),
        entities={"all": {"num_partitions": partitions}},
        relations=[{"name": "all_edges", "lhs": "all", "rhs": "all", "operator": operator}],
        dynamic_relations=True,
        **settings,
    )
    path.write_text(f"def get_torchbiggraph_config():\n    return {config!r}\n")


def write_pbg_input(dataset: Path, entity_path: Path, edge_path: Path, entity_type: str = "all") -> None:
    """The training split of bigkg's ``dataset`` as PBG 1.0.0's input files, with the
    same partitions: what ``torchbiggraph_import_from_tsv`` writes for a config with
    one entity type (``entity_type``) and dynamic relations.

    Both systems then train on one assignment of entities to partitions, and a benchmark
    spends seconds here instead of minutes in PBG's importer (~5k edges/s, a Python loop
    per line: 218 s for 1M edges, docs/benchmarks.md, "Partitioning").
    """
    manifest = load_manifest(dataset)
    if len(manifest.entity_types) != 1 or manifest.has_weights:
        raise ValueError(f"{dataset}: PBG's input is written for one entity type and unweighted edges; this dataset "
                         f"has types {[e.name for e in manifest.entity_types]} and weights={manifest.has_weights}")
    source = manifest.entity_types[0]
    entity_path.mkdir(parents=True, exist_ok=True)
    edge_path.mkdir(parents=True, exist_ok=True)
    for part, count in enumerate(source.partition_counts):
        (entity_path / f"entity_count_{entity_type}_{part}.txt").write_text(f"{count}\n")
        names = read_entity_names(dataset, source.name, part).to_pylist()
        (entity_path / f"entity_names_{entity_type}_{part}.json").write_text(json.dumps(names))
    (entity_path / "dynamic_rel_count.txt").write_text(f"{len(manifest.relations)}\n")
    (entity_path / "dynamic_rel_names.json").write_text(json.dumps([r.name for r in manifest.relations]))
    # PBG opens every bucket's file, an empty one included; its ids are int64 (FORMAT_VERSION 1).
    for i in range(manifest.num_partitions):
        for j in range(manifest.num_partitions):
            edges = read_bucket(dataset, "train", i, j, expected=manifest.bucket_count("train", i, j))
            with h5py.File(edge_path / f"edges_{i}_{j}.h5", "w") as fh:
                fh.attrs["format_version"] = 1
                for key in ("lhs", "rhs", "rel"):
                    fh.create_dataset(key, data=np.asarray(getattr(edges, key), dtype=np.int64))


if __name__ == "__main__":
    print(ensure_pbg_venv(sys.argv[1] if len(sys.argv) > 1 else None))
