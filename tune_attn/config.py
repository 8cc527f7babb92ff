"""Run configuration: dataclasses with a docstring per field, loaded from YAML plus ``--set`` overrides.

A config has four sections, ``data``, ``model``, ``train`` and ``detector``. One key names one thing everywhere: in YAML
(``model: {heads: 4}``), on the command line (``--set model.heads=4``), in metrics and, later, in search
spaces. Unknown keys and bad values raise :class:`ConfigError` (a ``ValueError``) naming the file, the key,
the value and what would be valid, before any work starts.

Also here, for the same reason (told before torch or Ray is imported): :func:`check_folder` for a run's or a
sweep's output folder, and :class:`WandbOptions`, how a run is logged to W&B (never part of its config).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DATASETS = ("synthetic", "pets", "cifar10", "imagefolder")
BACKBONES = ("small_cnn", "resnet18")
ACTIVATIONS = ("sigmoid", "relu", "softmax")
OPTIMIZERS = ("adamw", "adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
PADDINGS = ("zeros", "reflect", "replicate")
# Down-sampling factor of each backbone's feature map; the attention map must be at least 4 x 4.
BACKBONE_STRIDE = {"small_cnn": 8, "resnet18": 32}
MIN_MAP_SIZE = 4


class ConfigError(ValueError):
    """A config value or key is wrong; the message says where and what would be valid."""


def _check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not valid; choose one of {', '.join(choices)}")


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's and Optuna's samplers take 0 to 2**32 - 1, and so do tune-attn's seeds."""


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"{key}: {value!r} is out of range; valid: {lo} <= {key.split('.')[-1]} <= {hi}")


@dataclass
class DataConfig:
    name: str = "synthetic"
    """Data set: ``synthetic`` (embedded synthetic pets, no download), ``pets`` (Oxford-IIIT Pet),
    ``cifar10`` (python-pickle layout) or ``imagefolder`` (one sub-folder per class, or ``train`` / ``val`` folders
    of those)."""
    root: str | None = None
    """Local folder of a real data set (never downloaded); unused for ``synthetic``."""
    image_size: int = 64
    """Side of the square input images in pixels (32 to 512; the synthetic set supports 32 to 128)."""
    num_train: int = 4000
    """Synthetic set: number of training images."""
    num_val: int = 1000
    """Synthetic set: number of validation images."""
    val_fraction: float = 0.1
    """Real data sets: fraction of each class's training images held out for validation (split with ``seed``;
    at least one of every class with two or more); an ``imagefolder`` tree split in folders
    (``ROOT/train/<class>/...``, ``ROOT/val/<class>/...``) validates on its ``val`` folder instead."""
    seed: int = 0
    """Seed of the synthetic images and of the train / validation split (0 to 2**32 - 1)."""
    cache_dir: str | None = None
    """Where generated synthetic sets are cached; default ``$TUNE_ATTN_CACHE`` or ``~/.cache/tune_attn``."""
    memory_cache_mb: int = 2048
    """Image files (``pets``, ``imagefolder``): MiB of decoded, resized images kept in memory after their first
    read, per trial (0: decode every epoch). 224 px images take 147 KiB each."""

    def __post_init__(self) -> None:
        _check_choice("data.name", self.name, DATASETS)
        _check_range("data.image_size", self.image_size, 16, 512)
        if self.name == "synthetic":
            _check_range("data.image_size", self.image_size, 32, 128)
            _check_range("data.num_train", self.num_train, 1)
            _check_range("data.num_val", self.num_val, 1)
        elif not self.root:
            raise ConfigError(
                f"data.root: data set {self.name!r} needs data.root, the local folder holding it"
            )
        if self.val_fraction <= 0:
            raise ConfigError(
                f"data.val_fraction: {self.val_fraction!r} leaves no validation set, on which the accuracy, the mask "
                "panels and the detector are measured; valid: 0 < val_fraction <= 0.9"
            )
        _check_range("data.val_fraction", self.val_fraction, 0.0, 0.9)
        _check_range("data.memory_cache_mb", self.memory_cache_mb, 0)
        _check_range("data.seed", self.seed, 0, SEED_MAX)


@dataclass
class ModelConfig:
    backbone: str = "small_cnn"
    """Feature extractor: ``small_cnn`` (3 conv blocks, fast on a CPU; feature map = image / 8) or
    ``resnet18`` (torchvision, feature map = image / 32)."""
    pretrained_path: str | None = None
    """Local file of backbone weights to start from (a state dict: torchvision's for ``resnet18``, or a tune-attn
    bundle's ``weights.pt`` or run's ``checkpoint.pt``, whose backbone it takes); random init when empty. Never
    downloaded."""
    width: int = 32
    """``small_cnn``: channels of the first block (the blocks have width, 2 x width, 2 x width)."""
    activation: str = "sigmoid"
    """Mask activation: ``sigmoid`` (0..1), ``relu`` (>= 0) or ``softmax`` (spatial softmax, sums to 1)."""
    heads: int = 1
    """Number of attention masks; each head's masked features are pooled separately, then concatenated."""
    mask_kernel: int = 1
    """Kernel size of the conv that makes the masks: 1 or 3."""
    padding: str = "zeros"
    """Padding of the ``small_cnn`` convs and of a 3 x 3 mask conv: ``zeros``, ``reflect`` or ``replicate``."""
    channel_attention: bool = False
    """Add squeeze-and-excitation channel attention before the spatial attention."""
    se_reduction: int = 8
    """Channel attention: reduction ratio of the squeeze layer."""

    def __post_init__(self) -> None:
        _check_choice("model.backbone", self.backbone, BACKBONES)
        _check_choice("model.activation", self.activation, ACTIVATIONS)
        _check_range("model.heads", self.heads, 1, 64)
        if self.mask_kernel not in (1, 3):
            raise ConfigError(f"model.mask_kernel: {self.mask_kernel!r} is not valid; choose 1 or 3")
        _check_range("model.width", self.width, 4, 1024)
        _check_choice("model.padding", self.padding, PADDINGS)
        _check_range("model.se_reduction", self.se_reduction, 1, 1024)


@dataclass
class TrainConfig:
    optimizer: str = "adamw"
    """Optimizer: ``adamw`` (decoupled weight decay), ``adam`` or ``sgd`` (weight decay as L2 in the gradient)."""
    lr: float = 2e-3
    """Learning rate (constant)."""
    weight_decay: float = 1e-4
    """L2 / weight-decay strength, applied to every parameter (attention masks are sensitive to it)."""
    momentum: float = 0.9
    """``sgd``: momentum."""
    epochs: int = 10
    """Number of training epochs."""
    batch_size: int = 64
    """Mini-batch size."""
    seed: int = 0
    """Seed of the weight init and of the batch order (0 to 2**32 - 1); same seed, same results (on a GPU with
    ``deterministic``)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    deterministic: bool = True
    """CUDA: deterministic kernels (cuDNN's and torch's), so that the same seed gives the same run and a trial
    resumed from its checkpoint continues as if never stopped; off: cuDNN times its kernels for each input
    shape and keeps the fastest (``cudnn.benchmark``), nondeterministic ones too. CPU training is deterministic
    either way."""
    channels_last: bool = True
    """Use the channels-last memory format (faster convolutions on CPUs and GPUs)."""
    hflip: bool = False
    """Mirror each training image left-right with probability 1/2, drawn anew every epoch (seeded like the batch
    order): the augmentation photos of animals usually get. Validation images are never flipped."""
    panel_samples: int = 6
    """Number of fixed validation samples drawn in the mask panel each epoch."""
    stats_samples: int = 256
    """Number of fixed validation samples whose masks feed the mask statistics each epoch."""

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.device", self.device, DEVICES)
        _check_range("train.lr", self.lr, 1e-8, 10.0)
        _check_range("train.weight_decay", self.weight_decay, 0.0, 100.0)
        _check_range("train.momentum", self.momentum, 0.0, 0.999)
        _check_range("train.epochs", self.epochs, 1, 10_000)
        _check_range("train.batch_size", self.batch_size, 1, 65_536)
        _check_range("train.panel_samples", self.panel_samples, 1, 32)
        _check_range("train.stats_samples", self.stats_samples, 1, 100_000)
        _check_range("train.seed", self.seed, 0, SEED_MAX)


@dataclass
class DetectorConfig:
    grace_epochs: int = 2
    """Epochs at the start whose verdicts are ignored (masks are flat at init and take a while to form)."""
    patience: int = 1
    """Degenerate verdicts in a row, after the grace period, before the monitor says prune. 1: the first
    degenerate verdict after the grace period prunes (on 88 whole runs this saved 30-31 % of their epochs
    against 20-26 % with 2, and stopped one more run that later recovered: 2 instead of 1; see
    docs/degeneracy.md, "Patience"). Raise it for long runs whose masks may wobble."""
    head_quorum: float = 1.0
    """Share of the heads that must be degenerate for the model to be (1.0: every head)."""
    dead_max: float = 0.05
    """dead: the masks' mean per-mask maximum is below this (raw scale; not used for masks summing to 1)."""
    dead_fraction: float = 0.5
    """dead: at least this share of the masks is all zero."""
    corner_ratio: float = 2.0
    """corner: the mass in the corner cells is at least this many times a flat mask's share (0.25 on 8 x 8)."""
    corner_min_blocks: float = 2.0
    """corner: the mass must be spread over at least this many of the four corner blocks (each holding
    at least 10 % of a mask's mass, averaged over masks)."""
    border_ratio: float = 1.6
    """border: the mass in the border ring is at least this many times a flat mask's share (0.44 on 8 x 8)."""
    point_peak: float = 0.5
    """point: at least this share of a mask's mass sits in its single highest cell."""
    flat_contrast: float = 0.06
    """flat: the masks' contrast (coefficient of variation / sqrt(cells - 1)) is below this."""
    static_variation: float = 0.05
    """static: the masks' mean total-variation distance from their average mask is below this."""
    redundant_overlap: float = 0.8
    """redundant: with several heads, their masks' mean histogram intersection is at least this."""

    def __post_init__(self) -> None:
        _check_range("detector.grace_epochs", self.grace_epochs, 0, 10_000)
        _check_range("detector.patience", self.patience, 1, 10_000)
        for name in ("head_quorum", "dead_fraction", "point_peak", "redundant_overlap"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"detector.{name}: {value!r} is out of range; valid: 0 < {name} <= 1")
        for name in ("dead_max", "flat_contrast", "static_variation"):
            _check_range(f"detector.{name}", getattr(self, name), 0.0, 1.0)
        _check_range("detector.corner_min_blocks", self.corner_min_blocks, 0.0, 4.0)
        for name in ("corner_ratio", "border_ratio"):
            _check_range(f"detector.{name}", getattr(self, name), 1.0, 100.0)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """The data set."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The attention classifier."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The mask-degeneracy detector and monitor."""

    def __post_init__(self) -> None:
        stride = BACKBONE_STRIDE[self.model.backbone]
        side = self.data.image_size // stride
        if side < MIN_MAP_SIZE:
            raise ConfigError(
                f"data.image_size: {self.data.image_size} gives a {side} x {side} attention map with "
                f"model.backbone={self.model.backbone!r} (stride {stride}); the map must be at least "
                f"{MIN_MAP_SIZE} x {MIN_MAP_SIZE}, so use data.image_size >= {stride * MIN_MAP_SIZE}"
            )
        self.train.panel_samples = min(self.train.panel_samples, self.train.stats_samples)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (YAML- and JSON-ready)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flat dict with ``section.key`` keys, e.g. ``{"model.heads": 1, ...}``."""
        return flat_keys(self.to_dict())


def flat_keys(nested: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """A config as ``config.yaml`` holds it (``{section: {key: value}}``) with flat ``section.key`` keys; {} for
    None (an empty file)."""
    return {f"{s}.{k}": v for s, sect in (nested or {}).items() for k, v in sect.items()}


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "detector": DetectorConfig,
}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def valid_keys() -> list[str]:
    """Every ``section.key`` a config accepts."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def describe_keys() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every config key."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            rows.append(
                (f"{section}.{f.name}", _type_name(hints[f.name]), getattr(defaults, f.name), docs[f.name])
            )
    return rows


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, or raise ConfigError."""
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("", "none", "null")):
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required (type {tp.__name__})")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in (
                "true",
                "yes",
                "on",
                "1",
                "false",
                "no",
                "off",
                "0",
            ):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {tp.__name__}") from None
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover - a programming error


def unknown_key(key: str, valid: Iterable[str], where: str = "") -> ConfigError:
    """The error for a config key that does not exist: the key, the likeliest meant one where there is one
    (``train.epoch``: ``train.epochs``; ``model.lr``: ``train.lr``), and every valid key."""
    valid = list(valid)
    name = key.rpartition(".")[2]
    meant = difflib.get_close_matches(key, valid, n=1, cutoff=0.75) or [
        v for v in valid if v.rpartition(".")[2] == name
    ]
    hint = f" (did you mean {meant[0]!r}?)" if len(meant) == 1 else ""
    return ConfigError(f"{where}unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


def from_dict(raw: Mapping[str, Any], *, source: str = "") -> RunConfig:
    """Build a RunConfig from a nested dict such as a parsed YAML file.

    ``source`` (a file name) is put in front of every error message.
    """
    where = f"{source}: " if source else ""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}a config must be a mapping with sections {', '.join(SECTIONS)}")
    sections: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        cls = SECTIONS[section]
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{where}section {section!r} must be a mapping of keys to values, got {values!r}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                valid = [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
                raise unknown_key(f"{section}.{key}", valid, where)
            try:
                kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
            except ConfigError as exc:
                raise ConfigError(f"{where}{exc}") from None
        try:
            sections[section] = cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
    try:
        return RunConfig(**sections)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def parse_overrides(overrides: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Turn ``["model.heads=4", "train.lr=1e-3"]`` into a nested dict (values stay strings or YAML scalars)."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.heads=4")
        section, dot, name = key.partition(".")
        if not dot or section not in SECTIONS:
            raise unknown_key(key, valid_keys(), f"--set {item!r}: ")
        parsed = yaml.safe_load(value) if value.strip() else ""
        nested.setdefault(section, {})[name] = parsed
    return nested


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Nested merge of two section dicts; ``extra`` wins."""
    out: dict[str, Any] = {k: dict(v or {}) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, values in extra.items():
        if isinstance(out.get(section), dict) and isinstance(values, Mapping):
            out[section].update(values)
        else:
            out[section] = values
    return out


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one unsaid: a key
    added again to a long search space or config would silently undo the first)."""


def _unique_mapping(loader: _UniqueKeys, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges, as PyYAML does
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: PyYAML's own constructor names it
            continue
        if first is not None:
            again = key_node.start_mark.line
            lines = f"line {first + 1}" if again == first else f"lines {first + 1} and {again + 1}"
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice ({lines}); keep one", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file, a syntax error or a key given twice names the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        with path.open() as fh:
            return yaml.load(fh, Loader=_UniqueKeys) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Load a RunConfig from an optional YAML file and ``section.key=value`` overrides (overrides win)."""
    raw: Any = read_yaml(path) if path else {}
    source = str(path) if path else ""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source or 'config'}: a config must be a mapping with sections {', '.join(SECTIONS)}"
        )
    overrides = list(overrides)
    if overrides:
        source = f"{source} + --set" if source else "--set"
    return from_dict(merge(raw, parse_overrides(overrides)), source=source)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the config as YAML that :func:`load_config` reads back to an equal config."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def shown_value(value: object) -> str:
    """A config value as the sweep's lines and the leaderboard show it: a float to 3 significant digits (a
    log-scale weight decay of 0.000431 is not 0.000), None as ``-``."""
    return f"{value:.3g}" if isinstance(value, float) else ("-" if value is None else str(value))


def absolute_root(root: str | None, base: Path | None = None) -> str | None:
    """A path of a config (``data.root``, ``model.pretrained_path``) made absolute: ``~`` expanded, a relative one
    taken from ``base`` (default: the working directory, where the command was typed). A sweep's trials run in
    folders of their own and a bundle's config is read elsewhere, where a relative path would name another
    folder or file, or none."""
    if not root:
        return root
    path = os.path.expanduser(root)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base or Path.cwd(), path))


def check_folder(folder: Path, flag: str, other: str = "") -> None:
    """Fail with a ValueError that names ``folder`` (given as ``flag``) when it could not be made or written,
    before any work starts (nothing is made here); ``other``: what else would do (", or ..." in the message)."""
    alternative = f", {other}" if other else ""
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{flag} {folder}: a file, not a folder; give a folder (it is made if missing){alternative}"
        )
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(
            f"{flag} {folder}: cannot be made ({existing} is a file); give a folder{alternative}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{flag} {folder}: {existing} is not writable; give a folder you can write{alternative}"
        )


# W&B logging: how a run is logged, not what it trains (never saved with a run's config)
WANDB_MODES = ("offline", "online", "off")


@dataclass(frozen=True)
class WandbOptions:
    """Where and how runs are logged."""

    mode: str = "offline"
    """``offline`` (default: local files, ``wandb sync`` later), ``online`` (needs ``wandb login``) or ``off``."""
    project: str = "tune-attn"
    """W&B project."""
    entity: str | None = None
    """W&B entity (user or team); default: the logged-in user's."""
    group: str | None = None
    """Run group: the sweep name, so that a sweep's trials are shown together."""

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(f"--wandb: {self.mode!r} is not valid; choose one of {', '.join(WANDB_MODES)}")

    def problem(self) -> str | None:
        """Why W&B cannot work with these options (checked without network), or None."""
        if self.mode == "off":
            return None
        import wandb

        try:
            wandb.Settings(project=self.project)
        except Exception as exc:  # wandb raises UsageError or pydantic's ValidationError
            return f"--wandb-project: {first_line(exc)}"
        return None


def first_line(exc: BaseException) -> str:
    """``TypeName: the first line of the message``, at most 300 characters: an error told in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
