from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tune_attn.config import ConfigError, RunConfig
from tune_attn.tune.search import SearchSpace, SpaceError, config_from_flat, load_point

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)
SGD_MOMENTUM = {  # a key searched only when another has a given value
    "train.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "train.momentum": {"type": "uniform", "low": 0.5, "high": 0.9, "when": {"train.optimizer": "sgd"}},
}


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads_and_samples_valid_configs(path: Path) -> None:
    space = SearchSpace.load(path)
    assert space.searched_keys()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        flat = space.sample(trial)
        cfg = config_from_flat(flat)
        assert isinstance(cfg, RunConfig)
        assert set(trial.params) <= set(flat)
        study.tell(trial, 0.5)


def test_shipped_spaces_are_the_three_named() -> None:
    assert {p.stem for p in (ROOT / "search_spaces").glob("*.yaml")} == {"default", "smoke", "pets"}


def test_conditional_keys_are_sampled_only_when_their_condition_holds() -> None:
    space = SearchSpace.from_dict(SGD_MOMENTUM)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        flat = space.sample(trial)
        seen.add(flat["train.optimizer"])
        assert ("train.momentum" in flat) == (flat["train.optimizer"] == "sgd")
        assert ("train.momentum" in trial.params) == (flat["train.optimizer"] == "sgd")
        study.tell(trial, 0.0)
    assert seen == {"adamw", "sgd"}


def test_fixed_values_and_int_log_distributions() -> None:
    space = SearchSpace.from_dict(
        {
            "train.epochs": 3,
            "model.heads": {"type": "int", "low": 1, "high": 8, "log": True},
            "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        }
    )
    trial = optuna.create_study().ask()
    flat = space.sample(trial)
    assert flat["train.epochs"] == 3 and 1 <= flat["model.heads"] <= 8 and 1e-4 <= flat["train.lr"] <= 1e-2
    assert space.searched_keys() == ["model.heads", "train.lr"]
    assert space.max_value("model.heads") == 8 and space.max_value("train.epochs") == 3
    assert space.max_value("train.batch_size") == 64  # not in the space: the config default


def test_set_fixes_keys_over_the_space_file(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("train.epochs: 3\nmodel.heads: {type: int, low: 1, high: 4}\n")
    space = SearchSpace.load(path, ["model.heads=2", "train.epochs=12", "train.lr=0.01"])
    assert space.searched_keys() == []
    assert space.sample(optuna.create_study().ask()) == {
        "train.epochs": 12,
        "model.heads": 2,
        "train.lr": 0.01,
    }
    with pytest.raises(SpaceError, match=r"space.yaml \+ --set: .*model.heads"):
        SearchSpace.load(path, ["model.heads=0"])
    with pytest.raises(SpaceError, match="expected KEY=VALUE"):
        SearchSpace.load(path, ["model.heads"])


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            {"model.headz": 2},
            "unknown key 'model.headz' (did you mean 'model.heads'?); valid keys: data.name",
        ),
        (
            {"weight_decay": 1e-4},
            "unknown key 'weight_decay' (did you mean 'train.weight_decay'?); valid keys",
        ),
        ({"model.colour": "red"}, "unknown key 'model.colour'; valid keys: data.name"),
        (
            {"model.heads": {"type": "normal", "low": 1, "high": 2}},
            "model.heads: type 'normal' is not valid; choose one of categorical, int, uniform, loguniform",
        ),
        ({"model.heads": {"type": "int", "low": 4, "high": 1}}, "model.heads: low 4 must be below high 1"),
        (
            {"model.heads": {"type": "int", "low": 0, "high": 4}},
            "model.heads: the value 0 of this int is refused: model.heads: 0 is out of range",
        ),
        (
            {"model.activation": {"type": "categorical", "choices": ["sigmoid", "tanh"]}},
            "the value 'tanh' of this categorical is refused: model.activation: 'tanh' is not valid",
        ),
        ({"train.lr": {"type": "loguniform", "low": 0, "high": 1}}, "a loguniform needs low > 0"),
        ({"train.lr": {"type": "uniform", "low": 0.1}}, "a uniform needs numbers 'low' and 'high'"),
        ({"train.lr": {"type": "uniform", "low": 0.1, "high": 0.2, "bins": 3}}, "unknown field(s) bins"),
        ({"model.heads": {"type": "categorical", "choices": []}}, "needs a non-empty list 'choices'"),
        (
            {
                "train.momentum": {
                    "type": "uniform",
                    "low": 0.1,
                    "high": 0.2,
                    "when": {"train.optimizer": "sgd"},
                }
            },
            "'when' names 'train.optimizer', which is not a key earlier in this space",
        ),
        # A value the key it names never takes (a typo): the key was silently never drawn.
        (
            {
                "train.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
                "train.lr": {
                    "type": "loguniform",
                    "low": 1e-4,
                    "high": 1e-3,
                    "when": {"train.optimizer": "adam"},
                },
            },
            "train.lr: 'when' asks for train.optimizer = 'adam', which train.optimizer never takes here (choices "
            "['adamw', 'sgd']), so train.lr would never be drawn",
        ),
        (
            {
                "model.heads": {"type": "int", "low": 1, "high": 4},
                "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3, "when": {"model.heads": 6}},
            },
            "'when' asks for model.heads = 6, which model.heads never takes here (int range 1..4)",
        ),
        ({"model.heads": {"type": "int", "low": 1.5, "high": 4}}, "an int needs whole numbers"),
        # Optuna refused these only once Ray had started, naming neither the file nor the key.
        (
            {"model.heads": {"type": "int", "low": 1, "high": 4, "step": 0}},
            "an int's step must be a whole number >= 1, got 0",
        ),
        (
            {"model.heads": {"type": "int", "low": 1, "high": 4, "step": 2, "log": True}},
            "an int with log: true needs step 1 and low >= 1 (Optuna's rule), got step 2, low 1",
        ),
        (
            {"model.heads": {"type": "int", "low": 1, "high": 4, "log": "yes"}},
            "log must be true or false, got 'yes'",
        ),
        ({"data.image_size": 8}, "data.image_size: 8 is out of range"),
        ([1, 2], "a search space maps config keys"),
    ],
)
def test_bad_spaces_fail_before_any_trial_naming_the_key(raw: object, needle: str, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # in the order written: "earlier" keys
    with pytest.raises(SpaceError) as exc:
        SearchSpace.load(path)
    assert needle in str(exc.value)
    assert str(exc.value).startswith(str(path))


def test_a_key_fixed_over_the_space_may_leave_a_conditional_key_never_drawn() -> None:
    # `--set train.optimizer=sgd` on a space whose learning rate is drawn for AdamW only: no lr, the momentum.
    space = SearchSpace.load(ROOT / "search_spaces" / "default.yaml", ["train.optimizer=sgd"])
    drawn = space.sample(optuna.create_study().ask())
    assert drawn["train.optimizer"] == "sgd" and "train.momentum" in drawn and "train.lr" not in drawn


def test_data_roots_are_the_folders_trials_may_read() -> None:
    def roots(raw: dict) -> list[str]:
        return SearchSpace.from_dict(raw).data_roots()

    assert roots({"model.heads": 2}) == []  # the default data set: synthetic, no folder
    assert roots({"data.name": "pets", "data.root": "/data/pets"}) == ["/data/pets"]
    # A data set that reads a folder, drawn among others: its folder.
    either = {
        "data.name": {"type": "categorical", "choices": ["synthetic", "imagefolder"]},
        "data.root": "/d",
    }
    assert roots(either) == ["/d"]
    assert roots({"data.name": "synthetic", "data.root": "/unused"}) == []  # synthetic reads no folder
    # A relative root is made absolute from where the sweep started; ~ is the home folder.
    home = str(Path.home() / "c")
    for given, absolute in (("a", "/work/x/a"), ("d/../e", "/work/x/e"), ("~/c", home), ("/b", "/b")):
        space = SearchSpace.from_dict({**either, "data.root": given})
        assert space.relative_paths() == ([("data.root", given)] if given[0] not in "~/" else [])
        space.resolve_paths(Path("/work/x"))
        assert space.data_roots() == [absolute] and space.relative_paths() == []
    # So is a weights file, fixed or among choices (None: without one); a synthetic set's root is no path read.
    weights = {
        "data.root": "unused",
        "model.pretrained_path": {"type": "categorical", "choices": [None, "w.pt"]},
    }
    space = SearchSpace.from_dict(weights)
    assert space.weights_files() == ["w.pt"] and space.relative_paths() == [("model.pretrained_path", "w.pt")]
    space.resolve_paths(Path("/work/x"))
    assert space.weights_files() == ["/work/x/w.pt"] and space.relative_paths() == []
    assert space.data_roots() == []


def test_a_config_source_gives_the_searched_keys_it_sets_inside_the_space(tmp_path: Path) -> None:
    space = SearchSpace.from_dict(
        {
            **SGD_MOMENTUM,
            "model.heads": {"type": "int", "low": 1, "high": 7, "step": 2},
            "model.mask_kernel": {"type": "categorical", "choices": [1, 3]},
            "train.epochs": 3,
        },
        source="s.yaml",
    )
    sgd = {"train.optimizer": "sgd", "train.momentum": 0.8, "model.heads": 5, "train.epochs": 9}
    # the fixed train.epochs is the sweep's, not the file's
    assert space.point(sgd, "f") == {"train.optimizer": "sgd", "train.momentum": 0.8, "model.heads": 5}
    # a conditional key whose condition the config does not meet is not taken; a key it lacks is drawn
    assert space.point({"train.optimizer": "adamw", "train.momentum": 0.8}, "f") == {
        "train.optimizer": "adamw"
    }
    # what the search still draws for such a point: momentum only for SGD, or when the optimizer is drawn too
    assert space.left_to_draw(space.point(sgd, "f")) == ["model.mask_kernel"]
    assert space.left_to_draw({"train.optimizer": "adamw"}) == ["model.heads", "model.mask_kernel"]
    assert space.left_to_draw({"model.heads": 3}) == [
        "train.optimizer",
        "train.momentum",
        "model.mask_kernel",
    ]
    for values, refused in (
        ({"model.heads": 4}, r"f: model.heads: 4 is not in s.yaml's int range 1..7 in steps of 2"),
        ({"model.heads": 9}, r"model.heads: 9 is not in s.yaml's int range 1..7 in steps of 2"),
        ({"model.heads": 2.5}, r"model.heads: 2.5 is not in"),
        (
            {"train.optimizer": "sgd", "train.momentum": 0.95},
            r"train.momentum: 0.95 is not in s.yaml's uniform range 0.5..0.9",
        ),
        (
            {"model.mask_kernel": True},
            r"model.mask_kernel: True is not in s.yaml's choices \[1, 3\]",
        ),  # True == 1
        (
            {"train.optimizer": "adam"},
            r"train.optimizer: 'adam' is not in s.yaml's choices \['adamw', 'sgd'\]",
        ),
    ):
        with pytest.raises(SpaceError, match=refused):
            space.point(values, "f")


def test_a_config_source_is_read_from_a_file_or_a_run_or_bundle_folder(tmp_path: Path) -> None:
    space = SearchSpace.load(ROOT / "search_spaces" / "smoke.yaml")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "config.yaml").write_text(
        "model:\n  activation: softmax\n  heads: 2\ndata:\n  seed: 4\n"
    )
    assert load_point(space, tmp_path / "bundle") == {"model.activation": "softmax", "model.heads": 2}
    for text, refused in (
        ("model:\n  heads: 3\n", r"--try \S+c.yaml: model.heads: 3 is not in \S+smoke.yaml's int range 1..2"),
        ("model:\n  hedas: 2\n", r"--try \S+c.yaml: unknown key 'model.hedas'"),
        ("model:\n  heads: many\n", r"--try \S+c.yaml.*model.heads"),
        ("- 1\n", r"--try \S+c.yaml: a config must map sections \(data, model, train, detector\) to keys"),
        (
            "train:\n  epochs: 5\n",
            r"--try \S+c.yaml: sets none of the keys \S+smoke.yaml searches \(model.activation, ",
        ),
    ):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=refused):
            load_point(space, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"--try \S+nowhere.yaml: no such file"):
        load_point(space, tmp_path / "nowhere.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"--try \S+empty: a folder without config.yaml"):
        load_point(space, tmp_path / "empty")
