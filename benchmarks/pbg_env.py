"""PyTorch-BigGraph in its own virtual environment, for side-by-side benchmarks.

PBG pins old dependencies, so it never shares bigkg's environment. The venv is
created once (``python3 -m venv DIR`` then pip installs torch, torchbiggraph
and a setuptools PBG still imports) and marked complete by a ``.ready`` file;
later calls reuse it. DIR is ``/work/pbg-venv`` unless ``BIGKG_PBG_VENV`` or
the ``venv`` argument says otherwise.

    python benchmarks/pbg_env.py            # create (if needed) and print the venv path
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFAULT_VENV = Path("/work/pbg-venv")
PACKAGES = ["torch==2.13.0", "torchbiggraph", "setuptools<81"]
READY = ".ready"


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
    """Path of one of PBG's console scripts, e.g. ``torchbiggraph_import_from_tsv``."""
    path = ensure_pbg_venv(venv) / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is torchbiggraph installed in {path.parent.parent}?")
    return path


def write_pbg_config(path: Path, *, entity_path: Path, edge_path: Path, checkpoint_path: Path,
                     partitions: int, **settings: object) -> None:
    """A PBG config file: one entity type "all", one relation with no operator
    (dynamic relations), plus ``settings`` (dimension, loss_fn, workers...)."""
    config = dict(
        entity_path=str(entity_path),
        edge_paths=[str(edge_path)],
        checkpoint_path=str(checkpoint_path),
        entities={"all": {"num_partitions": partitions}},
        relations=[{"name": "all_edges", "lhs": "all", "rhs": "all", "operator": "none"}],
        dynamic_relations=True,
        **settings,
    )
    path.write_text(f"def get_torchbiggraph_config():\n    return {config!r}\n")


if __name__ == "__main__":
    print(ensure_pbg_venv(sys.argv[1] if len(sys.argv) > 1 else None))
