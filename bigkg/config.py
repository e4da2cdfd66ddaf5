"""The one configuration schema of bigkg: dataclasses loaded from YAML.

Every option is a dataclass field with a default, a help text and, where the
values are a closed set, the allowed choices. ``load_config(path, overrides)``
reads a YAML file, applies ``a.b=value`` overrides (values parsed as YAML) and
checks every key and value; a mistake raises ``ConfigError`` naming the key and
what is allowed. ``describe_options()`` lists every option for
``bigkg config --print-defaults``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterator

import yaml

from bigkg.errors import BigKGError


class ConfigError(BigKGError):
    """A config file or override with an unknown key or a bad value."""


def opt(default: Any, help: str, choices: tuple[Any, ...] | None = None, minimum: float | None = None) -> Any:
    """A config field: its default, help text, allowed values and lower bound."""
    meta = {"help": help, "choices": choices, "minimum": minimum}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


OPERATORS = ("none", "translation", "diagonal", "complex_diagonal", "rotate", "linear", "affine")
COMPARATORS = ("dot", "cos", "l2", "squared_l2")
LOSSES = ("softmax", "logistic", "ranking", "self_adversarial")
REGULARIZERS = ("none", "n3", "l2")
NEGATIVE_MODES = ("batched", "all")
NEGATIVE_SIDES = ("both", "tails", "heads")
BUCKET_ORDERS = ("inside_out", "outside_in", "random", "affinity")


GRAPH_ENCODERS = ("compgcn", "rgcn", "lightgcn", "kgat")
QUANTIZE_BITS = (0, 1, 2, 4, 8, 32)
ACTIVATIONS = ("relu", "tanh", "none")
COMPOSITIONS = ("mult", "sub")
COMBINES = ("last", "mean")


@dataclass
class EncoderConfig:
    """``model.encoder``: the entity encoder; also the spec ``bigkg.nn.build_encoder`` builds from."""

    name: str = opt("none", "entity encoder; 'none' is the shallow model (representation = embedding)", ("none",) + GRAPH_ENCODERS)
    layers: int = opt(2, "message-passing layers of a graph encoder", minimum=1)
    quantize_bits: int = opt(
        0, "bits of the saved activations: 0 off (plain autograd), 1/2/4/8 quantized, 32 exact node-level saving", QUANTIZE_BITS)
    message_thresholds: list[float] = opt(
        [], "delta_a per layer (the last repeats): drop messages below delta_a x the mean message norm; [] none")
    message_targets: list[float] = opt(
        [], "instead of message_thresholds: fraction in [0, 1) of each layer's incoming messages to drop; [] none")
    exact_message_norms: bool = opt(False, "score messages by their exact norms (one [E, d] pass) instead of the O(1) estimate")
    fused_kernels: bool = opt(True, "run elementwise messages through the numba edge kernel on CPU")
    weight_threshold: float = opt(0.0, "delta_w: drop weight entries below delta_w x their input-scaled mean; 0 off", minimum=0.0)
    weight_target: float = opt(0.0, "instead of weight_threshold: fraction in [0, 1) of weight entries to drop; 0 off", minimum=0.0)
    weight_ramp_steps: int = opt(0, "training steps over which weight pruning ramps up from none", minimum=0)
    composition: str = opt("mult", "CompGCN composition of an entity with a relation", COMPOSITIONS)
    num_bases: int = opt(4, "R-GCN basis matrices", minimum=1)
    activation: str | None = opt(None, "activation after each layer (default: the layer's own, tanh for CompGCN, relu for R-GCN)", ACTIVATIONS)
    dropout: float = opt(0.0, "dropout on each layer's output, in [0, 1)", minimum=0.0)
    residual: bool = opt(False, "add each layer's input to its output")
    combine: str | None = opt(None, "output: the last layer's, or the mean of all layers' (default: mean for lightgcn/kgat, else last)", COMBINES)
    fanouts: list[int] | None = opt(None, "neighbours sampled per node at each hop, one per layer; null takes every neighbour")
    full_graph_max_nodes: int = opt(
        50_000, "propagate over a partition's whole graph when it has at most this many nodes, else over each batch's neighbourhood",
        minimum=0)

    def structure(self) -> dict[str, Any]:
        """The options that fix the encoder's parameters (compared when a run resumes)."""
        if self.name == "none":
            return {"name": self.name}
        return {"name": self.name, "layers": self.layers, "composition": self.composition, "num_bases": self.num_bases}


@dataclass
class ModelConfig:
    dim: int = opt(100, "embedding dimension (even for complex_diagonal and rotate)", minimum=1)
    operator: str = opt("none", "relation operator applied to the head", OPERATORS)
    relation_operators: dict[str, str] = opt({}, "per-relation operator, relation name -> operator (overrides 'operator')")
    comparator: str = opt("dot", "how an operated head is compared with a tail; higher is better", COMPARATORS)
    bias: bool = opt(
        False, "PBG's bias: the first coordinate of each compared vector (the operated head, the tail) is not "
        "compared but added to the score, so an entity can score high or low whatever the query")
    reciprocal: bool = opt(False, "learn a reciprocal relation per relation to score heads given tails")
    regularizer: str = opt("none", "regularizer on the embedding rows and relation parameters used by a batch", REGULARIZERS)
    regularization_weight: float = opt(0.0, "weight of the regularizer", minimum=0.0)
    init_scale: float = opt(0.001, "standard deviation of the initial entity embeddings", minimum=0.0)
    max_norm: float | None = opt(
        None, "PBG's max_norm: every stored entity embedding row is kept at L2 norm at most this (rows start "
        "within it and are scaled down after each update; with an encoder, its input rows); null: unbounded")
    global_embedding: bool = opt(
        False, "PBG's global_emb: learn one vector per entity type, added to every entity's representation of that "
        "type before it is scored (a shared parameter); exports and evaluation include it")
    init_from: str | None = opt(
        None, "a fresh run starts from this earlier run directory (its latest checkpoint: entity vectors and "
        "Adagrad state by type and name, relation parameters by relation name) or this export of 'bigkg "
        "export' (Parquet, HDF5, npz, TSV, npy directory: entity vectors by type and name); the rest starts afresh")
    init_relations_from: str | None = opt(
        None, "a fresh run's relation operators start from this relations Parquet ('bigkg export --relations', or "
        "'bigkg convert --relations' of a PyTorch-BigGraph model), matched by relation name; its operators must be "
        "this model's (after model.init_from, whose relation parameters it overrides)")
    encoder: EncoderConfig = opt(EncoderConfig(), "entity encoder section")

    # The options a checkpoint's parameters depend on: a run resumes only under the same values.
    STRUCTURAL_OPTIONS = ("dim", "operator", "relation_operators", "comparator", "bias", "reciprocal", "encoder",
                          "global_embedding")

    def structure(self) -> dict[str, Any]:
        """The values of ``STRUCTURAL_OPTIONS`` (recorded in every checkpoint)."""
        values = dataclasses.asdict(self)
        return {k: self.encoder.structure() if k == "encoder" else values[k] for k in self.STRUCTURAL_OPTIONS}

    def first_difference(self, recorded: dict[str, Any], ignore: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
        """(option, recorded value, this config's value) of the first structural option on which
        a checkpoint's recorded ``structure()`` differs from this config; None when none does.
        Options the checkpoint predates count as recorded at their defaults."""
        saved, own = {**ModelConfig().structure(), **recorded}, self.structure()
        return next(((key, saved[key], own[key]) for key in self.STRUCTURAL_OPTIONS
                     if key not in ignore and saved[key] != own[key]), None)


@dataclass
class TrainingConfig:
    epochs: int = opt(10, "number of passes over the training edges", minimum=0)
    batch_size: int = opt(1000, "positive edges per optimizer step", minimum=1)
    chunk_size: int = opt(50, "C: positives per chunk; each is a negative for the chunk's other positives", minimum=1)
    num_uniform_negatives: int = opt(50, "U: entities drawn uniformly once per chunk from the partition", minimum=0)
    negatives: str = opt("batched", "'batched': chunk positives + U uniform; 'all': every entity of the partition", NEGATIVE_MODES)
    relation_negatives: dict[str, str] = opt(
        {}, "per-relation negatives, relation name -> batched or all (overrides 'negatives'; PBG's "
        "relations[].all_negs): a batch's edges of 'all' relations are scored against every entity of the "
        "partition, the others against their chunk's candidates")
    anchor_negatives: bool = opt(
        False, "batched mode: also score each positive against its own anchor (its head as a tail, its tail "
        "as a head), which evaluation ranks but sampled chunks almost never contain; helps graphs of "
        "symmetric relations such as WN18RR")
    foreign_negatives: int = opt(
        0, "P > 1: rows of the partitions NOT in memory scored as negatives by every batch, so queries are "
        "contrasted with entities of other partitions too, as evaluation does; their gradients are summed "
        "and applied when their partition is next loaded", minimum=0)
    foreign_pool: int = opt(
        0, "rows per side read per bucket (from the last checkpoint) from which each batch draws its "
        "foreign_negatives anew; 0: read foreign_negatives rows and score them in every batch of the bucket",
        minimum=0)
    negative_sides: str = opt(
        "both", "sides of a positive that are replaced by negatives: 'both'; 'tails': only the tail-prediction "
        "loss (PBG's disable_lhs_negs), as for user->item relations; 'heads': only the head-prediction loss "
        "(disable_rhs_negs). Evaluation still ranks both sides", NEGATIVE_SIDES)
    relation_negative_sides: dict[str, str] = opt(
        {}, "per-relation negative_sides, relation name -> both, tails or heads (overrides 'negative_sides')")
    loss: str = opt("softmax", "loss over a positive and its negatives", LOSSES)
    closed_form_softmax: bool = opt(
        True, "shallow model (no encoder, no global embedding), dot comparator without bias, softmax loss, "
        "batched negatives without anchors: compute the scores' gradient in closed form, autograd only "
        "taking it back through the relation operator and the regulariser (the same update, fewer "
        "products and tensor operations); false: always autograd")
    cuda_graphs: bool = opt(
        True, "on a GPU, with the closed-form step and one worker: capture the step as a CUDA graph and "
        "replay it per batch (one launch instead of ~200; batches of another size, and steps with "
        "foreign negatives, run as they are)")
    relation_weights: dict[str, float] = opt(
        {}, "per-relation loss weight, relation name -> weight (PBG's relations[].weight), multiplied with the "
        "edges' own weights; relations not named weigh 1")
    margin: float = opt(0.1, "margin of the ranking loss; γ of the self_adversarial loss, added to every score", minimum=0.0)
    adversarial_temperature: float = opt(
        1.0, "self_adversarial loss: negatives are weighted by the softmax of this times their score "
        "(0: equal weights, the logistic loss with γ)", minimum=0.0)
    lr: float = opt(0.1, "learning rate of the row-wise Adagrad on entity embeddings", minimum=0.0)
    shared_optimizer: str = opt("adagrad", "optimizer of the shared (relation, encoder) parameters", ("adagrad", "adam"))
    shared_lr: float | None = opt(None, "learning rate of the shared optimizer (default: lr)", minimum=0.0)
    bucket_order: str = opt("inside_out", "order in which the P x P buckets are trained", BUCKET_ORDERS)
    workers: int = opt(
        1, "workers training batches of the same bucket at once (Hogwild, like PBG's workers): processes on "
        "CPU for models without shared parameters, threads otherwise; "
        "1 keeps CPU training reproducible", minimum=1)
    threads: int = opt(0, "CPU threads per worker (torch intra-op work and numba's parallel kernels); 0: cores / workers", minimum=0)
    prefetch: bool = opt(True, "load the next bucket's partitions and edges in the background")
    num_edge_chunks: int = opt(
        0, "split every bucket's edges into this many chunks; an epoch is then as many passes over the "
        "buckets, pass c training chunk c of each, so only one chunk's edges are in memory and partitions "
        "meet more often (PBG's num_edge_chunks); 0: as few as max_edges_per_chunk allows", minimum=0)
    max_edges_per_chunk: int = opt(
        0, "with num_edge_chunks 0: the fewest chunks that keep each within this many edges, from the "
        "largest bucket (PBG's max_edges_per_chunk); 0: no limit, a bucket's edges are trained in one pass",
        minimum=0)


@dataclass
class EvalConfig:
    split: str = opt("test", "split evaluated by 'bigkg eval'", ("train", "valid", "test"))
    mode: str = opt("full", "'full': filtered ranking against every entity; 'sampled': against num_sampled uniform ones", ("full", "sampled"))
    num_sampled: int = opt(1000, "candidates per query in sampled mode", minimum=1)
    query_batch: int = opt(1024, "queries scored together", minimum=1)
    candidate_chunk: int = opt(0, "candidates scored together (bounds memory); 0: sized for the device, a block "
                                  "of about 4M scores per query batch on the CPU (it stays in cache), 65536 on a GPU",
                                  minimum=0)
    hits: list[int] = opt([1, 3, 10], "k of the reported hits@k")
    valid_every: int = opt(1, "validate every N epochs during training; 0 never", minimum=0)
    early_stopping_patience: int = opt(0, "stop after N validations without a better valid MRR; 0 never", minimum=0)
    restore_best: bool = opt(True, "at training's end, make the best-validated weights the final checkpoint (that version stays on disk until then)")
    rec_relation: str | None = opt(None, "user->item relation for recall@K / ndcg@K")
    rec_k: list[int] = opt([10, 20], "K of recall@K and ndcg@K")


@dataclass
class CheckpointConfig:
    keep_versions: int = opt(
        2, "complete checkpoint versions kept on disk (at least 2: the background loader may read the previous one)", minimum=2
    )
    snapshot_every: int = opt(
        0, "also keep the checkpoint of every N-th epoch's end as run_dir/snapshots/epoch_<k>, a run directory of its "
        "own (eval, export, query, model.init_from read it; PBG's checkpoint_preservation_interval); 0 never",
        minimum=0)


@dataclass
class DistributedConfig:
    lease_seconds: float = opt(60.0, "a bucket lease not renewed for this long goes back to the pool", minimum=0.0)
    heartbeat_seconds: float = opt(10.0, "interval at which a worker renews its lease", minimum=0.0)
    timeout: float = opt(600.0, "seconds to wait for the rendezvous and for peers", minimum=0.0)


@dataclass
class Config:
    dataset: str = opt("", "partitioned dataset directory (made by 'bigkg partition')")
    run_dir: str = opt("", "directory of this run: config, metrics, checkpoints, plots")
    seed: int = opt(0, "seed of initialisation, shuffling and negative sampling", minimum=0)
    device: str = opt("cpu", "'cpu', 'cuda', 'cuda:N', or 'auto' (cuda when available)")
    matmul_precision: str = opt(
        "highest", "float32 matrix products (torch.set_float32_matmul_precision): 'highest' exact float32; "
        "'high' TF32 on NVIDIA GPUs since Ampere (faster scoring, ~1e-3 relative error per product); "
        "'medium' bfloat16 passes where the hardware has them", ("highest", "high", "medium"))
    model: ModelConfig = opt(ModelConfig(), "model section")
    training: TrainingConfig = opt(TrainingConfig(), "training section")
    eval: EvalConfig = opt(EvalConfig(), "evaluation section")
    checkpoint: CheckpointConfig = opt(CheckpointConfig(), "checkpoint section")
    distributed: DistributedConfig = opt(DistributedConfig(), "distributed section")


# -- loading and checking ---------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotated type ``tp``; ints are accepted as floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return [_convert(f"{key}[{k}]", v, item) for k, v in enumerate(value)]
    if origin is dict:
        ktp, vtp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_convert(key, k, ktp): _convert(f"{key}.{k}", v, vtp) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e30 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        # nan passes every bound check and inf overflows timeouts; both would go wrong silently or late.
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of options, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"section {prefix!r}" if prefix else "the top level"
        raise ConfigError(f"unknown option {prefix + unknown[0]!r}; {where} allows: {', '.join(sorted(fields))}")
    values = {}
    for name, value in data.items():
        key = prefix + name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value if value is not None else {}, key + ".")
            continue
        converted = _convert(key, value, tp)
        meta = fields[name].metadata
        if meta.get("choices") and converted is not None and converted not in meta["choices"]:
            raise ConfigError(f"{key}: {converted!r} is not allowed; choose one of {', '.join(map(str, meta['choices']))}")
        if meta.get("minimum") is not None and converted is not None and converted < meta["minimum"]:
            raise ConfigError(f"{key}: {converted!r} is below the minimum {meta['minimum']}")
        values[name] = converted
    return cls(**values)


def _check(config: Config) -> None:
    """Rules that involve more than one option."""
    m = config.model
    for rel, op in m.relation_operators.items():
        if op not in OPERATORS:
            raise ConfigError(f"model.relation_operators.{rel}: {op!r} is not allowed; choose one of {', '.join(OPERATORS)}")
    complex_ops = {"complex_diagonal", "rotate"} & ({m.operator} | set(m.relation_operators.values()))
    if complex_ops and m.dim % 2:
        raise ConfigError(f"model.dim: {m.dim} must be even for the {sorted(complex_ops)[0]} operator")
    if m.bias and m.dim < 2:
        raise ConfigError(f"model.bias: model.dim {m.dim} leaves nothing to compare besides the bias; use dim 2 or more")
    if m.max_norm is not None and m.max_norm <= 0:
        raise ConfigError(f"model.max_norm: {m.max_norm!r} must be above 0 (null leaves rows unbounded)")
    if not (config.device in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", config.device)):
        raise ConfigError(f"device: {config.device!r} is not allowed; choose cpu, cuda, cuda:N or auto")
    _check_encoder(m.encoder)
    if config.training.foreign_negatives and m.encoder.name != "none":
        raise ConfigError(
            f"training.foreign_negatives: rows read from other partitions bypass model.encoder "
            f"({m.encoder.name!r}); use it with encoder 'none' only")
    t = config.training
    for key, named, allowed in (("relation_negative_sides", t.relation_negative_sides, NEGATIVE_SIDES),
                                ("relation_negatives", t.relation_negatives, NEGATIVE_MODES)):
        for rel, value in named.items():
            if value not in allowed:
                raise ConfigError(
                    f"training.{key}.{rel}: {value!r} is not allowed; choose one of {', '.join(allowed)}")
    for rel, weight in t.relation_weights.items():
        if weight < 0:  # non-finite numbers are refused when read
            raise ConfigError(f"training.relation_weights.{rel}: {weight!r} is below the minimum 0")
    if t.workers > 1 and m.encoder.name != "none":
        raise ConfigError(
            f"training.workers: {t.workers} Hogwild threads cannot share model.encoder {m.encoder.name!r}: "
            f"each would update its weights in place while another's backward pass still needs them; "
            f"use workers: 1 (training.threads sets the cores it uses)")
    if t.foreign_pool and not t.foreign_pool >= t.foreign_negatives > 0:
        raise ConfigError(
            f"training.foreign_pool: {t.foreign_pool} must be 0 or at least training.foreign_negatives "
            f"({t.foreign_negatives}), which must be set")
    for key, ks in (("eval.hits", config.eval.hits), ("eval.rec_k", config.eval.rec_k)):
        if ks and min(ks) < 1:
            raise ConfigError(f"{key}: every k must be at least 1, got {ks}")


def _check_encoder(e: EncoderConfig) -> None:
    key = "model.encoder."
    if e.message_thresholds and e.message_targets:
        raise ConfigError(f"{key}message_thresholds and {key}message_targets: set one of them, not both")
    if any(d < 0 for d in e.message_thresholds):
        raise ConfigError(f"{key}message_thresholds: every delta_a must be >= 0, got {e.message_thresholds}")
    if any(not 0 <= t < 1 for t in e.message_targets):
        raise ConfigError(f"{key}message_targets: every fraction must be in [0, 1), got {e.message_targets}")
    if e.weight_threshold > 0 and e.weight_target > 0:
        raise ConfigError(f"{key}weight_threshold and {key}weight_target: set one of them, not both")
    if e.weight_target >= 1:
        raise ConfigError(f"{key}weight_target: {e.weight_target} must be in [0, 1)")
    if e.dropout >= 1:
        raise ConfigError(f"{key}dropout: {e.dropout} must be in [0, 1)")
    if e.fanouts is not None:
        if len(e.fanouts) != e.layers:
            raise ConfigError(f"{key}fanouts: {len(e.fanouts)} entries for {e.layers} layers; give one per layer")
        if any(f < 1 for f in e.fanouts):
            raise ConfigError(f"{key}fanouts: every fan-out must be at least 1, got {e.fanouts}")


def _set_dotted(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    target = data
    for part in parts[:-1]:
        nxt = target.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        target = nxt
    try:
        target[parts[-1]] = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {exc}") from exc


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    data = _deep_copy(data)
    for override in overrides:
        _set_dotted(data, override)
    config = _build(Config, data, "")
    _check(config)
    return config


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping: plain YAML keeps the
    last silently, so a second ``training:`` section would replace the first one whole."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """Parse YAML as ``yaml.safe_load`` does, but a duplicate key is a ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def read_yaml_file(path: str | Path, what: str, error: type[BigKGError]) -> Any:
    """The contents of a YAML file; a file that cannot be read, is not UTF-8 or is not valid
    YAML (a duplicate key included) raises ``error``, naming ``what`` and the file."""
    path = Path(path)
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's YAML mapping, unchecked (``config_from_dict`` checks it); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return read_yaml_file(path, "config file", ConfigError) or {}


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config and apply ``key.sub=value`` overrides; errors name the file and key."""
    data = read_config_file(path)
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def describe_options(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, Any, str, tuple[Any, ...] | None]]:
    """(dotted key, default, help, choices) for every leaf option."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            yield from describe_options(type(value), prefix + f.name + ".")
        else:
            yield prefix + f.name, value, f.metadata.get("help", ""), f.metadata.get("choices")
