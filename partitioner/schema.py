"""Entity types from a schema file: each relation names its head and tail type.

The file is YAML (or JSON) mapping relation names to ``[head_type, tail_type]``::

    plays_for: [person, team]
    born_in:   [person, city]

Without a schema every entity has the single type ``entity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bigkg.config import read_yaml_file
from partitioner.errors import PartitionError

DEFAULT_TYPE = "entity"


@dataclass(frozen=True)
class Schema:
    types: list[str]
    # relation name -> (head type index, tail type index), in file order
    relations: dict[str, tuple[int, int]]


def load_schema(path: Path) -> Schema:
    data = read_yaml_file(path, "schema file", PartitionError)
    if not isinstance(data, dict) or not data:
        raise PartitionError(f"schema file {path} must map relation names to [head_type, tail_type]")
    types: list[str] = []
    relations: dict[str, tuple[int, int]] = {}
    for rel, pair in data.items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) and t for t in pair)):
            raise PartitionError(
                f"schema file {path}: relation {rel!r} must map to [head_type, tail_type], got {pair!r}"
            )
        for t in pair:
            # A type names directories and files of the dataset (entities/<type>/) and of exports.
            if t in (".", "..") or any(c in t for c in "/\\\0"):
                raise PartitionError(
                    f"schema file {path}: relation {rel!r}: entity type {t!r} cannot name a directory; "
                    "use a name without '/', '\\' or NUL that is not '.' or '..'"
                )
            if t not in types:
                types.append(t)
        relations[str(rel)] = (types.index(pair[0]), types.index(pair[1]))
    return Schema(types, relations)
