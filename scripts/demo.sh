#!/usr/bin/env bash
# The main job on the bundled CoDEx-S graph, one step after another.
# `make demo` runs it with .venv/bin first on PATH. Later steps append below,
# reading what earlier steps wrote under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=data/codex-s
OUT=out/codex-s
mkdir -p out

step() { printf '\n== %s\n' "$*"; }

step "partition $DATA into $OUT (4 partitions, summary in out/partition.json)"
bigkg partition "$DATA/train.txt" --valid "$DATA/valid.txt" --test "$DATA/test.txt" \
    --out "$OUT" --partitions 4 --seed 0 --force --json out/partition.json
