"""Streaming readers of edge files: TSV/CSV (optionally gzipped) and Parquet.

Files are read in Arrow record batches, never whole. Each batch comes back as
string columns head/relation/tail (plus float32 weights), with bad rows
(wrong number of columns, empty fields, unparsable weights) either reported
as a :class:`PartitionError` naming the file and line, or dropped and counted.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from partitioner.errors import PartitionError

FIELDS = ("head", "relation", "tail")
T = TypeVar("T")


@dataclass(frozen=True)
class InputFormat:
    """How to read the edge files; columns are positions ("0") or names."""

    fmt: str = "auto"  # auto | tsv | csv | parquet
    delimiter: str | None = None
    header: bool = False
    columns: tuple[str, str, str] = ("0", "1", "2")
    weight_column: str | None = None
    on_bad_line: str = "error"  # error | skip
    batch_rows: int = 1 << 20  # Parquet rows per record batch
    block_bytes: int = 16 << 20  # text bytes per record batch


@dataclass
class EdgeBatch:
    head: pa.Array
    rel: pa.Array
    tail: pa.Array
    weight: np.ndarray | None

    def __len__(self) -> int:
        return len(self.head)


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    return "tsv"


def read_edges(path: Path, spec: InputFormat, bad_lines: Counter) -> Iterator[EdgeBatch]:
    """Batches of the good edges of ``path``; skipped bad lines are added to ``bad_lines[str(path)]``."""
    if not path.is_file():
        raise PartitionError(f"input file {path} does not exist")
    fmt = detect_format(path, spec.fmt)
    if fmt == "parquet":
        yield from _read_parquet(path, spec, bad_lines)
    elif fmt in ("tsv", "csv"):
        yield from _read_text(path, fmt, spec, bad_lines)
    else:
        raise PartitionError(f"unknown input format {fmt!r}; use tsv, csv or parquet")


# -- column resolution ---------------------------------------------------------
def _resolve(path: Path, token: str, names: list[str], *, by_name_ok: bool, what: str) -> str:
    if token.isdigit():
        pos = int(token)
        if pos >= len(names):
            raise PartitionError(
                f"{path}: {what} column {pos} is out of range; the file has {len(names)} columns"
            )
        return names[pos]
    if not by_name_ok:
        raise PartitionError(f"{path}: {what} column {token!r} is a name, which needs --header (or use a position)")
    if token not in names:
        raise PartitionError(f"{path}: no column {token!r} for the {what}; columns present: {names}")
    return token


def _used_columns(path: Path, spec: InputFormat, names: list[str], by_name_ok: bool) -> list[str]:
    used = [_resolve(path, tok, names, by_name_ok=by_name_ok, what=f) for tok, f in zip(spec.columns, FIELDS)]
    if spec.weight_column is not None:
        used.append(_resolve(path, spec.weight_column, names, by_name_ok=by_name_ok, what="weight"))
    if len(set(used)) != len(used):
        raise PartitionError(f"{path}: the same column is used twice in {used}")
    return used


# -- per-batch validation --------------------------------------------------------
def _empty_rows(array: pa.Array) -> np.ndarray:
    """Boolean mask of null or empty strings."""
    return np.asarray(pc.equal(pc.binary_length(array), 0).fill_null(True), dtype=bool)


def _parse_weights(raw: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float32 weights, mask of rows whose weight is missing or not a number)."""
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        try:
            values = pc.cast(raw, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Only on bad data: find the offending rows one by one.
            parsed = []
            for text in raw.to_pylist():
                try:
                    parsed.append(float(text))
                except (TypeError, ValueError):
                    parsed.append(None)
            values = pa.array(parsed, type=pa.float32())
    else:
        values = pc.cast(raw, pa.float32())
    bad = np.asarray(values.is_null(), dtype=bool)
    return np.asarray(values.fill_null(0.0), dtype=np.float32), bad


def _clean(
    path: Path,
    columns: list[pa.Array],
    spec: InputFormat,
    locate: Callable[[int], int],
    first_invalid: int | None,
    unit: str,
    invalid_problem: str = "",
) -> tuple[EdgeBatch, int]:
    """Drop (or report) bad rows of one batch; returns the batch and how many rows were dropped.

    ``locate`` maps a row of this batch to its line (or row) number in the file;
    ``first_invalid`` is the line of the first row the parser rejected so far.
    """
    masks = [_empty_rows(c) for c in columns[:3]]
    weight = None
    if spec.weight_column is not None:
        weight, bad_weight = _parse_weights(columns[3])
        masks.append(bad_weight)
    bad = np.logical_or.reduce(masks)
    n_bad = int(bad.sum())
    if spec.on_bad_line == "error" and (n_bad or first_invalid is not None):
        if n_bad:
            row = int(np.flatnonzero(bad)[0])
            line = locate(row)
        if first_invalid is not None and (not n_bad or first_invalid < line):
            raise PartitionError(f"{path}: {unit} {first_invalid}: wrong number of columns ({invalid_problem})")
        field = (list(FIELDS) + ["weight"])[next(k for k, m in enumerate(masks) if m[row])]
        problem = "empty" if field != "weight" else "missing or non-numeric"
        raise PartitionError(f"{path}: {unit} {line}: {problem} {field} field")
    if n_bad:
        keep = pa.array(~bad)
        columns = [c.filter(keep) for c in columns[:3]]
        weight = weight[~bad] if weight is not None else None
    return EdgeBatch(columns[0], columns[1], columns[2], weight), n_bad


def _as_strings(path: Path, name: str, array: pa.Array) -> pa.Array:
    """Names as strings; numbers are cast, a column of another type (lists, structs) is an error."""
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PartitionError(f"{path}: column {name!r} has type {array.type}, which cannot be read as names") from exc


# -- Parquet -----------------------------------------------------------------------
def _read_parquet(path: Path, spec: InputFormat, bad_lines: Counter) -> Iterator[EdgeBatch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PartitionError(f"{path}: cannot read as Parquet: {exc}") from exc
    names = pf.schema_arrow.names
    used = _used_columns(path, spec, names, by_name_ok=True)
    if pf.metadata.num_rows == 0:
        raise PartitionError(f"{path}: empty input (no rows)")
    first_row = 0
    for batch in pf.iter_batches(batch_size=spec.batch_rows, columns=used):
        cols = [_as_strings(path, used[k], batch.column(k)) for k in range(3)] + [batch.column(k) for k in range(3, len(used))]
        start = first_row
        edges, n_bad = _clean(path, cols, spec, lambda row: start + row + 1, None, "row")
        bad_lines[str(path)] += n_bad
        first_row += batch.num_rows
        if len(edges):
            yield edges


# -- TSV / CSV -----------------------------------------------------------------------
def _first_lines(path: Path, limit: int = 1000) -> list[str]:
    """Up to ``limit`` first lines of a text file (decompressed), to learn its columns."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return [fh.readline().decode("utf-8", errors="replace").rstrip("\r\n") for _ in range(limit)]
    except (OSError, EOFError) as exc:
        raise PartitionError(f"{path}: cannot read: {exc}") from exc


def _split_fields(line: str, fmt: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter)) if fmt == "csv" else line.split(delimiter)


_ARROW_ROW = re.compile(r"Row #(\d+): CSV conversion error to string: invalid UTF8 data")


def _arrow_call(path: Path, call: Callable[[], T]) -> T:
    """``call()``, with Arrow's errors on bad text as a PartitionError naming the file (and line).

    Arrow reads the first block when the reader is opened, so both opening and reading
    can fail; its row numbers count the file's lines from 1, header included.
    """
    try:
        return call()
    except pa.ArrowInvalid as exc:
        utf8 = _ARROW_ROW.search(str(exc))
        if utf8:
            raise PartitionError(f"{path}: line {utf8.group(1)}: not valid UTF-8 text") from exc
        raise PartitionError(f"{path}: {exc}") from exc


def _read_text(path: Path, fmt: str, spec: InputFormat, bad_lines: Counter) -> Iterator[EdgeBatch]:
    delimiter = spec.delimiter or ("\t" if fmt == "tsv" else ",")
    lines = _first_lines(path)
    if spec.header:
        if not lines[0]:
            raise PartitionError(f"{path}: empty input (no header line)")
        names = _split_fields(lines[0], fmt, delimiter)
    else:
        # The usual number of fields of the first lines, so that one bad first line is just a bad line.
        widths = Counter(len(_split_fields(line, fmt, delimiter)) for line in lines if line)
        if not widths:
            raise PartitionError(f"{path}: empty input (no edges)")
        names = [f"c{k}" for k in range(widths.most_common(1)[0][0])]
    if spec.header and len(set(names)) != len(names):
        raise PartitionError(f"{path}: line 1: the header repeats a column name: {names}")
    used = _used_columns(path, spec, names, by_name_ok=spec.header)
    header_lines = 1 if spec.header else 0

    invalid: list[int] = []  # line numbers the parser rejected, in order
    first_problem: list[str] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        if not invalid:
            first_problem.append(f"{row.actual_columns} fields where {row.expected_columns} were expected")
        invalid.append(row.number)
        return "skip"

    reader = _arrow_call(path, lambda: pcsv.open_csv(
        pa.input_stream(str(path), compression="detect"),
        read_options=pcsv.ReadOptions(
            column_names=names, skip_rows=header_lines, use_threads=False, block_size=spec.block_bytes
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter,
            quote_char='"' if fmt == "csv" else False,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in used},
            include_columns=used,
            strings_can_be_null=False,
        ),
    ))
    delivered = 0  # rows handed out so far
    total_rows = 0
    while True:
        try:
            batch = _arrow_call(path, reader.read_next_batch)
        except StopIteration:
            break
        skipped = np.asarray(invalid, dtype=np.int64)
        # Delivered row k (0-based, file order) sits after the rejected lines s_m
        # with s_m - header - 1 - m <= k; that count shifts its line number.
        shifted = skipped - header_lines - 1 - np.arange(len(skipped))
        base = delivered

        def locate(row: int, base: int = base, shifted: np.ndarray = shifted) -> int:
            k = base + row
            return header_lines + k + 1 + int(np.searchsorted(shifted, k, side="right"))

        cols = [batch.column(k) for k in range(len(used))]
        edges, n_bad = _clean(
            path, cols, spec, locate, invalid[0] if invalid else None, "line", "".join(first_problem)
        )
        bad_lines[str(path)] += n_bad
        delivered += batch.num_rows
        total_rows += batch.num_rows
        if len(edges):
            yield edges
    if spec.on_bad_line == "error" and invalid:
        raise PartitionError(f"{path}: line {invalid[0]}: wrong number of columns ({first_problem[0]})")
    bad_lines[str(path)] += len(invalid)
    if total_rows + len(invalid) == 0:
        raise PartitionError(f"{path}: empty input (no edges)")
