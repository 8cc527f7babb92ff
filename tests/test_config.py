from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tune_attn import config as C
from tune_attn.config import ConfigError, load_config, shown_value

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.data.name == "synthetic" and cfg.model.heads == 1 and cfg.train.weight_decay == 1e-4
    C.save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_yaml_and_overrides_with_type_coercion(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  heads: 2\n  activation: relu\ntrain:\n  weight_decay: 1e-3\n")
    cfg = load_config(
        path, ["model.heads=4", "train.lr=5e-4", "model.channel_attention=true", "data.root=none"]
    )
    assert cfg.model.heads == 4  # --set wins over the file
    assert cfg.model.activation == "relu"
    assert cfg.train.weight_decay == pytest.approx(1e-3)  # "1e-3" is a string to YAML 1.1; coerced
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.model.channel_attention is True
    assert cfg.data.root is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["model.headz=2"],
            "unknown key 'model.headz' (did you mean 'model.heads'?); valid keys: model.backbone",
        ),
        (["optim.lr=1"], "unknown key 'optim.lr' (did you mean 'train.lr'?); valid keys: data.name"),
        (["model.colour=red"], "unknown key 'model.colour'; valid keys: model.backbone"),  # nothing like it
        (["model.heads"], "expected KEY=VALUE"),
        (
            ["model.activation=tanh"],
            "model.activation: 'tanh' is not valid; choose one of sigmoid, relu, softmax",
        ),
        (["model.heads=0"], "model.heads: 0 is out of range"),
        (["model.heads=two"], "model.heads: 'two' is not a valid int"),
        (["model.heads=1.5"], "model.heads: 1.5 is not a valid int"),
        (["model.mask_kernel=5"], "model.mask_kernel: 5 is not valid; choose 1 or 3"),
        (["train.weight_decay=-1"], "train.weight_decay: -1.0 is out of range"),
        (["train.optimizer=lbfgs"], "choose one of adamw, adam, sgd"),
        (["data.name=pets"], "data.root: data set 'pets' needs data.root"),
        (["data.image_size=200"], "data.image_size: 200 is out of range"),
        (["model.channel_attention=maybe"], "not a valid bool"),
        (
            ["model.padding=circle"],
            "model.padding: 'circle' is not valid; choose one of zeros, reflect, replicate",
        ),
        (["data.val_fraction=0"], "data.val_fraction: 0.0 leaves no validation set"),
        (["detector.patience=0"], "detector.patience: 0 is out of range"),
        (["data.seed=-1"], "data.seed: -1 is out of range; valid: 0 <= seed <= 4294967295"),  # numpy's error
        (["train.seed=4294967296"], "train.seed: 4294967296 is out of range; valid: 0 <= seed <= 4294967295"),
        (["detector.point_peak=1.5"], "detector.point_peak: 1.5 is out of range; valid: 0 < point_peak <= 1"),
        (["model.backbone=resnet18", "data.image_size=64"], "use data.image_size >= 128"),
    ],
)
def test_bad_values_name_key_value_and_choices(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert needle in str(exc.value)
    assert str(exc.value).startswith("--set")  # says where the bad value came from


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  heads: 3\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'model\.colour'"):
        load_config(path)
    path.write_text("modle:\n  heads: 3\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: unknown section 'modle'; valid sections: data, model, train, detector"
    ):
        load_config(path)
    path.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)
    path.write_text("model: {heads: 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    # A key given twice is refused (PyYAML keeps the last one unsaid), at any depth; YAML's merge key still merges.
    path.write_text("model:\n  heads: 2\n  activation: relu\n  heads: 3\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: not valid YAML: 'heads' is given twice \(lines 2 and 4\)"
    ):
        load_config(path)
    path.write_text("train: {epochs: 2, epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"'epochs' is given twice \(line 1\); keep one"):
        load_config(path)
    path.write_text("defaults: &m {heads: 2, activation: relu}\nmodel:\n  <<: *m\n  heads: 3\n")
    assert C.read_yaml(path) == {
        "defaults": {"heads": 2, "activation": "relu"},
        "model": {"heads": 3, "activation": "relu"},
    }
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_every_key_is_documented() -> None:
    rows = C.describe_keys()
    assert [r[0] for r in rows] == C.valid_keys()
    for cls in C.SECTIONS.values():
        docs = C.field_docs(cls)
        for f in dataclasses.fields(cls):
            assert len(docs.get(f.name, "")) > 15, f"{cls.__name__}.{f.name} has no docstring"


def test_config_choices_match_the_registries() -> None:
    from tune_attn.data import DATASETS
    from tune_attn.models import ACTIVATIONS, BACKBONES
    from tune_attn.models.attention import PADDINGS

    assert set(C.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(C.BACKBONES) == set(BACKBONES) == set(C.BACKBONE_STRIDE)
    assert set(C.DATASETS) == set(DATASETS)
    assert set(C.PADDINGS) == set(PADDINGS)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    for section, values in raw.items():
        for key, value in values.items():
            assert cfg.flat()[f"{section}.{key}"] == value or isinstance(value, str)


def test_shipped_configs_exist() -> None:
    assert len(list((ROOT / "configs").glob("*.yaml"))) >= 2


def test_config_values_are_shown_to_three_significant_digits() -> None:
    # A log-scale weight decay keeps its digits ("0.000" was shown once); whole numbers and names as they are.
    assert shown_value(0.000431279) == "0.000431"
    assert shown_value(0.5) == "0.5" and shown_value(1.23456e-05) == "1.23e-05"
    assert (shown_value(3), shown_value("softmax"), shown_value(None)) == ("3", "softmax", "-")
