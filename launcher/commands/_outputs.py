"""What ``bigkg export`` and ``bigkg convert`` share about their outputs: the ``--format`` help,
and the check made before writing their two outputs (entity vectors at ``--out``, relation
parameters at ``--relations``): both or neither. ``bigkg config --from-pbg --out`` makes
the same check for its one file."""

from __future__ import annotations

from pathlib import Path

from bigkg.export import ExportError


FORMAT_HELP = ("parquet (one row per entity), hdf5 (a group per type), npy (a directory), npz, "
               "tsv (a line per entity: name, then the values; PBG's export_to_tsv entity file)")


def check_outputs(out: str, relations: str | None, force: bool) -> None:
    """Refuse one file named twice, and an existing output without ``--force``, before anything is written."""
    if relations and Path(relations).resolve() == Path(out).resolve():
        raise ExportError(f"--out and --relations both name {out}: give the relations a file of their own")
    for path in filter(None, (out, relations)):
        if Path(path).exists() and not force:
            raise ExportError(f"{path} already exists (use --force to replace it)")
