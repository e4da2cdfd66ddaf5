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

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


if __name__ == "__main__":
    print(ensure_pbg_venv(sys.argv[1] if len(sys.argv) > 1 else None))
