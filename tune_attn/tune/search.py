"""Declarative search spaces (YAML) turned into an Optuna define-by-run function.

A space file maps config keys (``section.key``, as in ``--set``) to a fixed value or a distribution::

    model.activation: {type: categorical, choices: [sigmoid, relu, softmax]}
    model.heads: {type: int, low: 1, high: 4}
    train.weight_decay: {type: loguniform, low: 1.0e-6, high: 1.0e-1}
    train.lr: {type: loguniform, low: 3.0e-4, high: 1.0e-2}
    train.momentum: {type: uniform, low: 0.8, high: 0.99, when: {train.optimizer: sgd}}
    train.epochs: 8

``when`` makes a key conditional: it is sampled only when the named keys (sampled or fixed earlier in the
file) have the given values, otherwise the config default holds. The whole space is checked before any
trial runs: unknown keys, unknown distribution types, bad ranges and values the config would refuse raise
:class:`SpaceError` naming the file, the key and what is valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_attn.config import (
    ConfigError,
    RunConfig,
    absolute_root,
    flat_keys,
    from_dict,
    parse_overrides,
    read_yaml,
    unknown_key,
    valid_keys,
)

DISTRIBUTIONS = ("categorical", "int", "uniform", "loguniform")
_FIELDS = {
    "categorical": {"type", "choices", "when"},
    "int": {"type", "low", "high", "step", "log", "when"},
    "uniform": {"type", "low", "high", "when"},
    "loguniform": {"type", "low", "high", "when"},
}


class SpaceError(ConfigError):
    """A search space is wrong; the message names the file, the key and what would be valid."""


@dataclass
class Param:
    """One key of a space: a fixed ``value``, or a distribution to sample."""

    key: str
    kind: str  # "fixed" or one of DISTRIBUTIONS
    value: Any = None
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    log: bool = False
    when: dict[str, Any] = field(default_factory=dict)

    def holds(self, known: Mapping[str, Any], drawn: Iterable[str] = ()) -> bool:
        """Whether this parameter's ``when`` holds for the ``known`` flat values (a key not there at its config
        default); a key in ``drawn``, not known yet, may take the value asked for."""
        return all(k in drawn or known.get(k, _default(k)) == v for k, v in self.when.items())

    def candidates(self) -> list[Any]:
        """Values that span the parameter (for checking the space before any trial)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def spec(self) -> Any:
        """The YAML form of this parameter (a fixed value, or its distribution)."""
        if self.kind == "fixed":
            return self.value
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.kind == "int":
                out.update(low=int(self.low), high=int(self.high), step=self.step, log=self.log)
        if self.when:
            out["when"] = dict(self.when)
        return out

    def refuses(self, value: Any) -> str | None:
        """Why this distribution cannot give ``value`` (its range or choices, to name in an error), or None."""
        if self.kind == "categorical":
            same = [c for c in self.choices if c == value and isinstance(c, bool) == isinstance(value, bool)]
            return None if same else f"choices {self.choices}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int":
            whole = number and float(value).is_integer()
            on_step = whole and (int(value) - int(self.low)) % self.step == 0
            inside = whole and self.low <= value <= self.high
            step = f" in steps of {self.step}" if self.step != 1 else ""
            return None if on_step and inside else f"int range {int(self.low)}..{int(self.high)}{step}"
        if number and self.low <= value <= self.high:
            return None
        return f"{self.kind} range {self.low:g}..{self.high:g}"

    def sample(self, trial: Any) -> Any:
        """Draw this parameter from an Optuna trial (define-by-run)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")


@dataclass
class SearchSpace:
    """An ordered list of parameters loaded from a YAML file."""

    params: list[Param]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path, fixed: Iterable[str] = ()) -> SearchSpace:
        """Load a space file; ``fixed`` (``["train.epochs=12"]``, as ``--set``) fixes keys over the file's."""
        raw = read_yaml(path)
        fixed = list(fixed)
        if fixed and isinstance(raw, Mapping):
            raw = dict(raw)
            try:
                nested = parse_overrides(fixed)
            except ConfigError as exc:
                raise SpaceError(f"{path}: {exc}") from None
            for section, values in nested.items():
                raw.update({f"{section}.{name}": value for name, value in values.items()})
        return cls.from_dict(raw, source=f"{path} + --set" if fixed else str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "") -> SearchSpace:
        where = f"{source}: " if source else ""
        if not isinstance(raw, Mapping) or not raw:
            raise SpaceError(
                f"{where}a search space maps config keys to values or distributions, e.g. "
                "'model.heads: {type: int, low: 1, high: 4}'"
            )
        keys = valid_keys()
        params: list[Param] = []
        for key, spec in raw.items():
            if key not in keys:
                raise SpaceError(str(unknown_key(key, keys, where)))
            params.append(_parse(key, spec, where, {p.key: p for p in params}))
        space = cls(params, source)
        space.check()
        return space

    def check(self) -> None:
        """Build a RunConfig for the extremes of every parameter, so that a bad range or choice fails now."""
        where = f"{self.source}: " if self.source else ""
        fixed = {p.key: p.value for p in self.params if p.kind == "fixed"}
        try:
            config_from_flat(fixed)
        except ConfigError as exc:
            raise SpaceError(f"{where}{exc}") from None
        for p in self.params:
            if p.kind == "fixed":
                continue
            for value in p.candidates():
                try:
                    config_from_flat({**fixed, **p.when, p.key: value})
                except ConfigError as exc:
                    raise SpaceError(
                        f"{where}{p.key}: the value {value!r} of this {p.kind} is refused: {exc}"
                    ) from None

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: draw every active parameter from an Optuna trial; returns flat ``section.key`` values.

        A parameter whose ``when`` does not hold is skipped (the config default applies)."""
        flat: dict[str, Any] = {}
        for p in self.params:
            if p.holds(flat):
                flat[p.key] = p.sample(trial)
        return flat

    def point(self, values: Mapping[str, Any], source: str) -> dict[str, Any]:
        """The trial of this space that takes its searched keys' values from flat ``values`` (``--try``): each
        searched key whose ``when`` holds for them and that ``values`` sets; the search draws the others. A value
        outside its distribution raises :class:`SpaceError` naming ``source``, the key and what is valid."""
        flat: dict[str, Any] = {}
        point: dict[str, Any] = {}
        for p in self.params:
            if not p.holds(flat):
                continue
            if p.kind == "fixed":
                flat[p.key] = p.value
            elif p.key in values:
                problem = p.refuses(values[p.key])
                if problem:
                    raise SpaceError(
                        f"{source}: {p.key}: {values[p.key]!r} is not in {self.source}'s {problem}"
                    )
                flat[p.key] = point[p.key] = values[p.key]
        return point

    def left_to_draw(self, point: Mapping[str, Any]) -> list[str]:
        """The searched keys the search draws for the trial of ``point`` (from :meth:`point`): those it does not
        set whose ``when`` holds for its values, or hangs on a key drawn too. ``train.lr`` under ``{when:
        {train.optimizer: adamw}}`` is not drawn for a point that sets ``train.optimizer: sgd``."""
        known: dict[str, Any] = {}
        drawn: list[str] = []
        for p in self.params:
            if not p.holds(known, drawn):
                continue
            if p.kind == "fixed":
                known[p.key] = p.value
            elif p.key in point:
                known[p.key] = point[p.key]
            else:
                drawn.append(p.key)
        return drawn

    def to_dict(self) -> dict[str, Any]:
        """The space as a YAML-ready mapping (``SearchSpace.from_dict`` reads it back to an equal space)."""
        return {p.key: p.spec() for p in self.params}

    def searched_keys(self) -> list[str]:
        return [p.key for p in self.params if p.kind != "fixed"]

    def drawn_keys(self, config: Mapping[str, Any]) -> list[str]:
        """The searched keys drawn for a trial of this flat ``config``: those whose ``when`` held
        (``train.momentum`` only for SGD trials in ``{when: {train.optimizer: sgd}}``); the others kept their
        config value, unsearched. [] for an empty config."""
        searched = [p for p in self.params if p.kind != "fixed"]
        return [p.key for p in searched if config and all(config.get(k) == v for k, v in p.when.items())]

    def data_roots(self) -> list[str]:
        """The ``data.root`` folders this space's trials may read: its values (fixed or categorical) when a data
        set that needs one (any but ``synthetic``) may be drawn; empty otherwise."""
        if all(name == "synthetic" for name in self.values("data.name")):
            return []
        return sorted({str(root) for root in self.values("data.root") if root})

    def weights_files(self) -> list[str]:
        """The ``model.pretrained_path`` files this space's trials may read: its values (fixed or categorical)."""
        return sorted({str(path) for path in self.values("model.pretrained_path") if path})

    def resolve_paths(self, base: Path) -> None:
        """Make this space's ``data.root`` and ``model.pretrained_path`` absolute, a relative one taken from
        ``base`` and ``~`` expanded (:func:`~tune_attn.config.absolute_root`): a local sweep's trials run in
        folders of their own, where a relative path would name nothing. (A space fixes ``data.root``;
        ``model.pretrained_path`` may be a categorical: with weights or without, say.)"""
        for p in self.params:
            if p.key in ("data.root", "model.pretrained_path") and p.kind == "fixed":
                p.value = absolute_root(p.value, base)
            elif p.key == "model.pretrained_path" and p.kind == "categorical":
                p.choices = [absolute_root(c, base) if isinstance(c, str) else c for c in p.choices]

    def relative_paths(self) -> list[tuple[str, str]]:
        """The paths this space's trials read, given relative (not absolute, not ``~/...``), as (key, path):
        ``data.root`` of data sets that need one, and ``model.pretrained_path``."""
        paths = [("data.root", r) for r in self.data_roots()]
        paths += [("model.pretrained_path", w) for w in self.weights_files()]
        return [(k, p) for k, p in paths if not p.startswith("~") and not Path(p).is_absolute()]

    def values(self, key: str) -> list[Any]:
        """The values ``key`` can take: its fixed value or choices, else the config default."""
        values = [v for p in self.params if p.key == key for v in p.candidates()]
        return values or [_default(key)]

    def max_value(self, key: str) -> Any:
        """The largest value ``key`` can take in this space (the config default when the space omits it)."""
        return max(self.values(key))


def _default(key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(RunConfig(), section), name)


def _parse(key: str, spec: Any, where: str, earlier: dict[str, Param]) -> Param:
    if not isinstance(spec, Mapping):
        return Param(key, "fixed", value=spec)
    kind = spec.get("type")
    if kind not in DISTRIBUTIONS:
        raise SpaceError(
            f"{where}{key}: type {kind!r} is not valid; choose one of {', '.join(DISTRIBUTIONS)}"
        )
    extra = set(spec) - _FIELDS[kind]
    if extra:
        raise SpaceError(
            f"{where}{key}: unknown field(s) {', '.join(sorted(extra))} for a {kind}; valid: "
            f"{', '.join(sorted(_FIELDS[kind]))}"
        )
    when = spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise SpaceError(
            f"{where}{key}: 'when' must map earlier keys to values, e.g. {{train.optimizer: sgd}}"
        )
    for k, v in when.items():
        if k not in earlier:
            raise SpaceError(f"{where}{key}: 'when' names {k!r}, which is not a key earlier in this space")
        # a drawn key that never takes the value (a typo: `adam` for `adamw`) would leave this key never drawn;
        # a fixed one may (`--set train.optimizer=sgd` on a space whose lr is drawn for adamw only)
        never = earlier[k].refuses(v) if earlier[k].kind != "fixed" else None
        if never:
            raise SpaceError(
                f"{where}{key}: 'when' asks for {k} = {v!r}, which {k} never takes here ({never}), so {key} "
                "would never be drawn"
            )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}{key}: a categorical needs a non-empty list 'choices'")
        return Param(key, kind, choices=list(choices), when=dict(when))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise SpaceError(f"{where}{key}: a {kind} needs numbers 'low' and 'high'") from None
    if not low < high and not (kind == "int" and low == high):
        raise SpaceError(f"{where}{key}: low {low:g} must be below high {high:g}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}{key}: a loguniform needs low > 0, got {low:g}")
    if kind == "int" and (not low.is_integer() or not high.is_integer()):
        raise SpaceError(f"{where}{key}: an int needs whole numbers, got low {low:g}, high {high:g}")
    step, log = spec.get("step", 1), spec.get("log", False)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise SpaceError(f"{where}{key}: an int's step must be a whole number >= 1, got {step!r}")
    if not isinstance(log, bool):
        raise SpaceError(f"{where}{key}: log must be true or false, got {log!r}")
    if log and (step != 1 or low < 1):
        raise SpaceError(
            f"{where}{key}: an int with log: true needs step 1 and low >= 1 (Optuna's rule), got step {step}, "
            f"low {low:g}"
        )
    return Param(key, kind, low=low, high=high, step=step, log=log, when=dict(when))


def load_point(space: SearchSpace, path: str | Path) -> dict[str, Any]:
    """The trial of ``space`` that ``--try PATH`` asks for (:meth:`SearchSpace.point`): PATH is a config file (a
    bundle's or a run's ``config.yaml``, ``configs/*.yaml``) or a folder holding ``config.yaml``; only the keys
    the file sets count. A bad file, or a value outside the space, raises a ConfigError naming it."""
    path = Path(path)
    file = path / "config.yaml" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise ConfigError(
            f"--try {path}: a folder without config.yaml; give a config file, or a bundle or run folder"
        )
    try:
        raw = read_yaml(file)
        if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
            sections = ", ".join(RunConfig().to_dict())
            raise ConfigError(f"{file}: a config must map sections ({sections}) to keys")
        from_dict(raw, source=str(file))  # an unknown key or a bad value, named as for tune-attn train
    except ConfigError as exc:
        raise ConfigError(f"--try {exc}") from None
    point = space.point(flat_keys(raw), f"--try {file}")
    if not point:
        raise ConfigError(
            f"--try {file}: sets none of the keys {space.source} searches ({', '.join(space.searched_keys())})"
        )
    return point


def config_from_flat(flat: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A RunConfig from flat ``section.key`` values over ``base`` (default: the defaults)."""
    nested: dict[str, dict[str, Any]] = {s: dict(v) for s, v in (base or RunConfig()).to_dict().items()}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return from_dict(nested)


__all__ = ["DISTRIBUTIONS", "Param", "SearchSpace", "SpaceError", "config_from_flat", "load_point"]
