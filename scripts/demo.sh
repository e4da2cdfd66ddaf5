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

CONFIG=configs/codex-s.yaml
RUN=runs/codex-s

step "train $CONFIG (ComplEx, d=256; checkpoints and metrics.jsonl in $RUN, summary in out/train.json)"
bigkg train "$CONFIG" --fresh --json out/train.json > /dev/null

step "evaluate: filtered ranking of every test triple, both directions, against all entities"
bigkg eval "$CONFIG" --split test --json out/eval.json

step "export every entity's name and vector, and every relation's parameters, to Parquet"
bigkg export "$CONFIG" --format parquet --out out/codex-s-embeddings.parquet \
    --relations out/codex-s-relations.parquet --force

IFS=$'\t' read -r HEAD REL _ < "$DATA/train.txt"
step "query: the 5 best tails of ($HEAD, $REL, ?)"
bigkg query "$CONFIG" --head "$HEAD" --relation "$REL" -k 5

step "query: the 5 entities nearest to $HEAD (cosine of the vectors)"
bigkg query "$CONFIG" --similar "$HEAD" -k 5

step "plot training loss and valid MRR per epoch"
bigkg plot "$CONFIG"

MRR=$(python3 -c 'import json; print("%.4f" % json.load(open("out/eval.json"))["mrr"])')
cat <<SUMMARY

Filtered test MRR on CoDEx-S: $MRR   (LibKGE's ComplEx: 0.465)
  dataset      $OUT
  run          $RUN (checkpoints/, metrics.jsonl, config.yaml)
  metrics      out/eval.json
  embeddings   out/codex-s-embeddings.parquet
  relations    out/codex-s-relations.parquet
  plot         $RUN/training.png
SUMMARY
