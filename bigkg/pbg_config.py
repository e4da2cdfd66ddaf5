"""A PyTorch-BigGraph config file translated into a bigkg config (``bigkg config --from-pbg``).

PBG's config is a Python file whose ``get_torchbiggraph_config()`` returns a dict. Every
option of PBG 1.0.0 (and the regulariser of later PBG) is either translated into bigkg's
option of the same meaning, with PBG's default where the file leaves it out (the two
projects' defaults differ: PBG's comparator is cos, its loss ranking, its lr 0.01), or
named in a note saying where it went or why it has no translation (featurized
entities). The table of the
translation is docs/migrating_from_pbg.md, "Config options".
"""

from __future__ import annotations

import runpy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigkg.config import ConfigError, config_from_dict

# PBG 1.0.0's defaults (torchbiggraph/config.py) of the options translated below, and those
# of later PBG's regulariser (regularization_coef, regularizer), which 1.0.0 lacks.
PBG_DEFAULTS: dict[str, Any] = {
    "init_scale": 1e-3, "max_norm": None, "global_emb": True, "comparator": "cos", "bias": False,
    "loss_fn": "ranking", "margin": 0.1, "init_path": None, "checkpoint_preservation_interval": None,
    "num_epochs": 1, "num_edge_chunks": None, "max_edges_per_chunk": 1_000_000_000, "bucket_order": "inside_out",
    "workers": None, "batch_size": 1000, "num_batch_negs": 50, "num_uniform_negs": 50,
    "disable_lhs_negs": False, "disable_rhs_negs": False, "lr": 1e-2, "relation_lr": None,
    "background_io": False, "regularization_coef": 0.0, "regularizer": "N3",
}
RELATION_DEFAULTS: dict[str, Any] = {"weight": 1.0, "operator": "none", "all_negs": False}

# Options with nothing to set in bigkg, and where their job is done instead.
ELSEWHERE: dict[str, str] = {
    "entity_path": "bigkg trains on the directory `bigkg partition` writes: set `dataset` (or --set dataset=DIR)",
    "edge_paths": "the train/valid/test edges are given to `bigkg partition` (--valid, --test), which writes them into the dataset",
    "checkpoint_path": "set `run_dir` (or --set run_dir=DIR); a PBG checkpoint becomes a start with `bigkg convert` and model.init_from",
    "entities": "entity types and partitions are made by `bigkg partition` (--partitions P, --schema for several types)",
    "dynamic_relations": "bigkg always reads relation types from the edges",
    "eval_fraction": "bigkg validates on a split: `bigkg partition --valid FILE` or --valid-fraction, then eval.valid_every",
    "eval_num_batch_negs": "bigkg's validation ranks against every entity, filtered (eval.mode: sampled for sampled candidates)",
    "eval_num_uniform_negs": "bigkg's validation ranks against every entity, filtered (eval.mode: sampled for sampled candidates)",
    "verbose": "use `bigkg -v`",
    "hogwild_delay": "bigkg's Hogwild workers need no delay",
    "num_machines": "torchrun --nnodes starts bigkg's workers (docs/distributed.md)",
    "num_partition_servers": "partitions move through the run directory; there are no partition servers",
    "distributed_init_method": "torchrun's rendezvous (--rdzv-endpoint)",
    "distributed_tree_init_order": "the lock server applies the first-epoch rule",
}


class PBGConfigError(ConfigError):
    """A PBG config file that cannot be read or translated."""


@dataclass
class Translation:
    """The bigkg config (nested, as YAML holds it), notes on options moved elsewhere, and
    the options bigkg cannot reproduce."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)


def load_pbg_config(path: str | Path) -> dict[str, Any]:
    """The dict that ``get_torchbiggraph_config()`` of the Python file ``path`` returns."""
    if not Path(path).is_file():
        raise PBGConfigError(f"PBG config {path} does not exist")
    try:
        function = runpy.run_path(str(path)).get("get_torchbiggraph_config")
        if not callable(function):
            raise PBGConfigError(f"PBG config {path} defines no get_torchbiggraph_config()")
        config = function()
    except PBGConfigError:
        raise
    except Exception as exc:  # the user's file failed to run: say which and why
        raise PBGConfigError(f"PBG config {path} could not be run: {type(exc).__name__}: {exc}") from exc
    if not isinstance(config, dict):
        raise PBGConfigError(f"PBG config {path}: get_torchbiggraph_config() returned {type(config).__name__}, not a dict")
    return config


def translate_pbg_config(path: str | Path) -> Translation:
    """The translation of the PBG config file ``path``; every error names the file."""
    pbg = load_pbg_config(path)
    try:
        return translate(pbg)
    except PBGConfigError as exc:
        raise PBGConfigError(f"PBG config {path}: {exc}") from exc


def translate(pbg: dict[str, Any]) -> Translation:
    """bigkg's config for PBG's ``pbg`` (a dict as its config file returns)."""
    unknown = sorted(set(pbg) - set(PBG_DEFAULTS) - set(ELSEWHERE) - {"dimension", "relations"})
    if "dimension" not in pbg:
        raise PBGConfigError("the PBG config has no 'dimension' (PBG requires it)")
    options = {**PBG_DEFAULTS, **pbg}
    t = Translation({"model": {}, "training": {}, "checkpoint": {}})
    model, training = t.config["model"], t.config["training"]
    model.update(dim=options["dimension"], init_scale=options["init_scale"], max_norm=options["max_norm"],
                 global_embedding=options["global_emb"], comparator=options["comparator"], bias=options["bias"],
                 # PBG learns an operator per side, each for the entity the other side is scored against.
                 reciprocal=True)
    training.update(epochs=options["num_epochs"], batch_size=options["batch_size"],
                    chunk_size=options["num_batch_negs"], num_uniform_negatives=options["num_uniform_negs"],
                    loss=options["loss_fn"], margin=options["margin"], lr=options["lr"],
                    bucket_order=options["bucket_order"], prefetch=options["background_io"])
    if options["relation_lr"] is not None:
        training["shared_lr"] = options["relation_lr"]
    if options["workers"] is not None:
        training["workers"] = options["workers"]
    else:
        t.notes.append("workers: PBG uses every core by default; bigkg's training.workers is 1 (set it to the cores)")
    training.update(num_edge_chunks=options["num_edge_chunks"] or 0, max_edges_per_chunk=options["max_edges_per_chunk"])
    if options["init_path"]:
        model["init_from"] = options["init_path"]
        t.notes.append("init_path: model.init_from reads a bigkg run or export; convert a PBG checkpoint with `bigkg convert` first")
    if options["checkpoint_preservation_interval"]:
        t.config["checkpoint"]["snapshot_every"] = options["checkpoint_preservation_interval"]
    if options["regularization_coef"]:
        model.update(regularizer=str(options["regularizer"]).lower(), regularization_weight=options["regularization_coef"])
    _translate_sides(options, training)
    _translate_relations(pbg.get("relations", []), bool(pbg.get("dynamic_relations")), t)
    for name, entity in sorted(pbg.get("entities", {}).items()):
        if entity.get("featurized"):
            t.untranslated.append(f"entities.{name}.featurized: bigkg has no featurized entities")
    t.notes += [f"{key}: {where}" for key, where in ELSEWHERE.items() if key in pbg]
    counts = {e.get("num_partitions") for e in pbg.get("entities", {}).values()}
    if len(counts) == 1 and None not in counts:
        t.notes.append(f"entities: this config's partitions are `bigkg partition --partitions {counts.pop()}`")
    t.notes += [f"{key}: not an option of PBG 1.0.0; left out" for key in unknown]
    t.config = {k: v for k, v in t.config.items() if v}
    try:
        config_from_dict(t.config)  # every value must be one bigkg accepts
    except ConfigError as exc:
        raise PBGConfigError(f"the translated config is not valid: {exc}") from exc
    return t


def _translate_sides(options: dict[str, Any], training: dict[str, Any]) -> None:
    lhs, rhs = options["disable_lhs_negs"], options["disable_rhs_negs"]
    if lhs and rhs:
        raise PBGConfigError("disable_lhs_negs and disable_rhs_negs are both set: no side would be trained")
    if lhs or rhs:
        training["negative_sides"] = "tails" if lhs else "heads"  # the side still corrupted


def _translate_relations(relations: list[dict[str, Any]], dynamic: bool, t: Translation) -> None:
    """Operators, weights and all_negs of PBG's relations. With dynamic_relations the one
    relation listed stands for every relation type of the edges."""
    if not relations:
        return
    rows = [{**RELATION_DEFAULTS, **r} for r in relations]
    model, training = t.config["model"], t.config["training"]
    operators = Counter(r["operator"] for r in rows)
    model["operator"] = operators.most_common(1)[0][0]
    modes = {r["name"]: "all" if r["all_negs"] else "batched" for r in rows}
    negatives = Counter(modes.values()).most_common(1)[0][0]
    if negatives == "all":
        training["negatives"] = "all"
    if not dynamic:
        # Named relations: those whose operator, weight or negatives differ from the common ones.
        others = {r["name"]: r["operator"] for r in rows if r["operator"] != model["operator"]}
        if others:
            model["relation_operators"] = others
        weights = {r["name"]: r["weight"] for r in rows if r["weight"] != 1.0}
        if weights:
            training["relation_weights"] = weights
        other_modes = {name: mode for name, mode in modes.items() if mode != negatives}
        if other_modes:
            training["relation_negatives"] = other_modes
    elif rows[0]["weight"] != 1.0:
        t.notes.append("relations[0].weight: with dynamic_relations it weighs every relation; scale training.lr instead")
    t.notes.append("relations: their head and tail entity types go to `bigkg partition --schema` "
                   "(one line per relation: `name: [head_type, tail_type]`)")
