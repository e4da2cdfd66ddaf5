"""Build train/valid/test TSVs of the Last.FM recommendation graph (KGCN's kgcn-music).

Input: the ``kgcn-music/`` directory (or ``kgcn-music.tar.xz``) with ``kg.txt``,
``item_index2entity_id.txt`` and ``user_artists.dat``. Output, in ``--out``:

* ``train.tsv``, ``valid.tsv``, ``test.tsv``: ``head<TAB>relation<TAB>tail``;
  user->artist edges have relation ``listens_to`` and heads ``user_<id>``;
  artists are named by their KG entity id, as in ``kg.txt``; every KG triple is
  in ``train.tsv``.
* ``schema.yaml`` for ``bigkg partition --schema``: ``listens_to: [user, entity]``,
  every KG relation ``[entity, entity]``.

Protocol (the usual one for this data): user-artist pairs whose artist maps to
a KG entity are kept; each user's artists are shuffled with ``--seed`` and
20% (rounded to nearest) go to test; of the remaining 80%, ``--valid-share``
(rounded to nearest) go to valid, the rest to train. Evaluate with
``eval.rec_relation=listens_to``: Recall@K/NDCG@K over all artists, excluding
each user's train (and, for test, valid) artists.

    python benchmarks/prepare_lastfm.py ../shared/data/kgcn-music.tar.xz --out data/lastfm
    bigkg partition data/lastfm/train.tsv --valid data/lastfm/valid.tsv --test data/lastfm/test.tsv \\
        --schema data/lastfm/schema.yaml --out out/lastfm
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import yaml

from bigkg.atomic import atomic_file, write_text_atomic

REC_RELATION = "listens_to"


def _source_dir(src: Path, scratch: Path) -> Path:
    if src.is_dir():
        return src
    if not src.is_file():
        sys.exit(f"prepare_lastfm: {src} does not exist")
    with tarfile.open(src) as tar:
        tar.extractall(scratch, filter="data")
    return scratch / "kgcn-music"


def _read_rows(path: Path, skip_header: bool) -> list[list[str]]:
    if not path.is_file():
        sys.exit(f"prepare_lastfm: missing {path}")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if skip_header and number == 1 or not line.strip():
                continue
            rows.append(line.rstrip("\n").split("\t"))
    return rows


def split_user_items(users: np.ndarray, seed: int, test_share: float, valid_share: float):
    """Per-user seeded split of (user, item) pairs: masks (train, valid, test)."""
    rng = np.random.default_rng(seed)
    split = np.zeros(users.size, dtype=np.int8)  # 0 train, 1 valid, 2 test
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(users[order][1:] != users[order][:-1]) + 1
    for group in np.split(order, bounds):
        group = rng.permutation(group)
        n_test = int(np.floor(test_share * group.size + 0.5))
        n_valid = int(np.floor(valid_share * (group.size - n_test) + 0.5))
        split[group[:n_test]] = 2
        split[group[n_test : n_test + n_valid]] = 1
    return split == 0, split == 1, split == 2


def _write_tsv(path: Path, rows) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for h, r, t in rows:
            fh.write(f"{h}\t{r}\t{t}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="kgcn-music directory or kgcn-music.tar.xz")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-share", type=float, default=0.2, help="share of each user's artists for test")
    parser.add_argument("--valid-share", type=float, default=0.1, help="share of the rest for valid")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        src = _source_dir(args.src, Path(scratch))
        kg = _read_rows(src / "kg.txt", skip_header=False)
        mapping = {row[0]: row[1] for row in _read_rows(src / "item_index2entity_id.txt", skip_header=False)}
        listens = _read_rows(src / "user_artists.dat", skip_header=True)
    pairs = sorted({(f"user_{u}", mapping[a]) for u, a, *_ in listens if a in mapping})
    users = np.array([u for u, _ in pairs])
    items = np.array([i for _, i in pairs])
    train, valid, test = split_user_items(users, args.seed, args.test_share, args.valid_share)

    args.out.mkdir(parents=True, exist_ok=True)
    kg_rows = [(h, r, t) for h, r, t in kg]
    _write_tsv(args.out / "train.tsv", kg_rows + [(u, REC_RELATION, i) for u, i in zip(users[train], items[train])])
    _write_tsv(args.out / "valid.tsv", [(u, REC_RELATION, i) for u, i in zip(users[valid], items[valid])])
    _write_tsv(args.out / "test.tsv", [(u, REC_RELATION, i) for u, i in zip(users[test], items[test])])
    schema = {REC_RELATION: ["user", "entity"], **{r: ["entity", "entity"] for r in sorted({r for _, r, _ in kg})}}
    write_text_atomic(args.out / "schema.yaml", yaml.safe_dump(schema, sort_keys=False))
    print(
        f"{len(pairs)} user-artist pairs of {np.unique(users).size} users over {np.unique(items).size} artists: "
        f"train {int(train.sum())}, valid {int(valid.sum())}, test {int(test.sum())}; "
        f"{len(kg_rows)} KG triples in train; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
