"""What ``tune-attn sweep`` takes besides the search space, and the checks made before Ray starts.

Light on purpose (no torch, Ray or Optuna): the command line checks a sweep here and tells a mistyped key or
option in well under a second, before it imports the sweep itself (:mod:`tune_attn.tune.sweep`, ~3 s).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tune_attn.config import SEED_MAX, WandbOptions, check_folder
from tune_attn.files import lock_holder, sole_writer
from tune_attn.tune.search import SearchSpace, load_point

SAMPLERS = ("tpe", "random")
SWEEP_RECORD = "sweep.json"
"""The file in a sweep folder that records the space and the options it was started with (for ``--resume``,
``tune-attn best`` and ``export``)."""
DRIVER_LOCK = ".driver.lock"
"""In a local sweep folder: locked (``flock``) by the driver running the sweep, for as long as it runs; it holds
``pid N on HOST, since TIME``."""


@dataclass
class SweepOptions:
    """What ``tune-attn sweep`` takes besides the space."""

    name: str = "sweep"
    """The sweep's folder under ``storage``; a sweep of that name there is continued. ``tune-attn sweep``
    without ``--name`` gives a new one each time (:func:`new_sweep_name`)."""
    storage: str = "runs/sweeps"
    num_samples: int = 8
    max_concurrent: int = 2
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str = "none"
    asha_grace: int = 2
    sampler: str = "tpe"
    startup_trials: int | None = None
    """TPE's random trials before it models the results; default max(4, min(10, num_samples // 4)) (Optuna's
    10 would leave a 10-trial sweep purely random)."""
    seed: int = 0
    max_failures: int = 2
    """How often Tune starts a failed trial again (from its last checkpoint) before it counts as an error; -1:
    without limit (Tune's ``FailureConfig.max_failures``). A lost node is such a failure; a NaN or infinite loss
    is not (the trial ends at once: from its checkpoint it would diverge again)."""
    resume: bool = False
    prune: bool = True
    fixed: tuple[str, ...] = ()
    """``section.key=value`` items that fix keys over the space file's (``--set``)."""
    tries: tuple[str, ...] = ()
    """Config files (or bundle / run folders) whose trials run first, before the search draws its own
    (``--try``; Ray Tune's ``points_to_evaluate``, Optuna's ``enqueue_trial``): the searched keys they set."""
    points: tuple[dict[str, Any], ...] = ()
    """The trials of ``tries``, as :func:`check_sweep` read them (searched keys and values): what the search
    proposes first."""
    reuse_actors: bool = True
    """Start the next trial in a finished trial's process (same resources) instead of a new one (Tune's
    ``reuse_actors``): the imports and CUDA's start are paid once per process, not once per trial."""
    progress_seconds: float = 60.0
    """While trials train, a status line at most this often (0: after every epoch reported)."""
    time_budget: float | None = None
    """Seconds after this run's start past which the search proposes no trial (``--time-budget``, as Optuna's
    ``timeout``): the running trials finish, then the sweep ends; ``--resume`` runs the trials left. None: no
    limit. Not kept by a resumed sweep: it applies to the run it is given to."""
    wandb: str = "offline"
    wandb_project: str = "tune-attn"
    wandb_entity: str | None = None
    given: frozenset[str] | None = None
    """The options given on the command line, by field name (None: all, as for a library caller). A resumed
    sweep tells only of given options it does not take; a given ``num_samples`` above its own adds trials."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"--num-samples: {self.num_samples}; must be >= 1")
        if self.max_concurrent < 1:
            raise ValueError(f"--max-concurrent: {self.max_concurrent}; must be >= 1")
        if self.cpus_per_trial <= 0:
            raise ValueError(f"--cpus-per-trial: {self.cpus_per_trial}; must be > 0")
        if self.gpus_per_trial < 0:
            raise ValueError(f"--gpus-per-trial: {self.gpus_per_trial}; must be >= 0 (fractions allowed)")
        if self.scheduler not in ("asha", "none"):
            raise ValueError(f"--scheduler: {self.scheduler!r} is not valid; choose asha or none")
        if self.asha_grace < 1:
            raise ValueError(f"--asha-grace: {self.asha_grace}; must be >= 1 epoch")
        if self.progress_seconds < 0:
            raise ValueError(f"--progress-every: {self.progress_seconds}; must be >= 0 seconds")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"--time-budget: {self.time_budget} seconds; must be > 0")
        if self.max_failures < -1:
            raise ValueError(f"--max-failures: {self.max_failures}; must be >= 0, or -1 for no limit")
        if not 0 <= self.seed <= SEED_MAX:  # else Optuna's sampler refuses it once Ray has started
            raise ValueError(f"--seed: {self.seed}; must be from 0 to {SEED_MAX} (2**32 - 1)")
        if self.startup_trials is not None and self.startup_trials < 1:
            raise ValueError(f"--startup-trials: {self.startup_trials}; must be >= 1")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler: {self.sampler!r} is not valid; choose {' or '.join(SAMPLERS)}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"--name: {self.name!r}; a folder name without '/' is needed (not '.' or '..')")
        self.wandb_options()  # checks --wandb

    def tpe_startup_trials(self) -> int:
        if self.startup_trials is not None:
            return self.startup_trials
        return max(4, min(10, self.num_samples // 4))

    def wandb_options(self) -> WandbOptions:
        return WandbOptions(self.wandb, self.wandb_project, self.wandb_entity, group=self.name)

    def storage_path(self) -> str:
        """An absolute local path, or a URI such as ``s3://bucket/prefix`` as given."""
        return self.storage if "://" in self.storage else str(Path(self.storage).resolve())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with a unit, ``s``, ``m``, ``h`` or ``d`` (``90m``, ``1.5h``, ``2h30m``), or
    seconds alone (``3600``); ValueError naming it otherwise."""
    number = r"(?:\d+(?:\.\d*)?|\.\d+)"
    lowered = text.lower()
    if re.fullmatch(rf"\s*{number}\s*", lowered):
        return float(lowered)
    if not re.fullmatch(rf"\s*(?:{number}\s*[smhd]\s*)+", lowered):
        raise ValueError(
            f"--time-budget: {text!r} is not a duration; give a number with a unit, s, m, h or d (90m, 1.5h, "
            "2h30m), or seconds alone (3600)"
        )
    parts = re.findall(rf"({number})\s*([smhd])", lowered)
    return sum(float(n) * _UNITS[u] for n, u in parts)


def shown_duration(seconds: float) -> str:
    """``seconds`` as a person reads them: ``45s``, ``12m30s``, ``1h30m``, ``26h``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def plain(value: Any) -> Any:
    """``value`` as ``sweep.json`` holds it (JSON values: tuples are lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def recorded(options: SweepOptions) -> dict[str, Any]:
    """The options as ``sweep.json`` holds them."""
    return plain({k: v for k, v in vars(options).items() if k not in ("wandb_entity", "given")})


def new_sweep_name(space_path: str | Path, now: datetime.datetime | None = None) -> str:
    """The name of a sweep started without one: the space file's name and the time, ``default-20261127-101500``
    for ``search_spaces/default.yaml``: a sweep started a second later or more never gets an earlier one's name."""
    return f"{Path(space_path).stem}-{(now or datetime.datetime.now()):%Y%m%d-%H%M%S}"


def claim_new_sweep(options: SweepOptions) -> SweepOptions:
    """For a sweep started without ``--name`` (named by :func:`new_sweep_name`): make its folder in a local
    ``--storage`` now, so that no other sweep takes the name; a sweep started in the same second as another gets
    ``NAME-2`` (``-3``...), not the other's folder. The options with the name it got; as they are for a URI
    storage or a Ray Client address (the folder is made where the sweep runs)."""
    address = options.address or os.environ.get("RAY_ADDRESS", "")  # as check_sweep reads it
    if "://" in options.storage or address.startswith("ray://"):
        return options
    for n in itertools.count(1):
        name = options.name if n == 1 else f"{options.name}-{n}"
        try:
            (Path(options.storage) / name).mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ValueError(
                f"--storage {options.storage}: cannot make the sweep's folder {name} in it ({exc})"
            ) from None
        return replace(options, name=name)
    raise AssertionError("unreachable")


def release_unused(options: SweepOptions) -> None:
    """Remove the folder :func:`claim_new_sweep` made if the sweep left it empty (it failed before it started:
    a cluster address where nothing answers, say), so that no empty sweep folder stays behind."""
    if "://" not in options.storage:
        with contextlib.suppress(OSError):  # not empty, or not there: kept as it is
            (Path(options.storage) / options.name).rmdir()


def sweeps_in(storage: str) -> list[str]:
    """The names of the sweeps in a local ``--storage`` folder (those with a :data:`SWEEP_RECORD`), the newest
    first; [] for a URI or a folder that is not there."""
    if "://" in storage or not Path(storage).is_dir():
        return []
    records = [p for p in Path(storage).glob(f"*/{SWEEP_RECORD}") if p.is_file()]
    return [p.parent.name for p in sorted(records, key=lambda p: p.stat().st_mtime, reverse=True)]


@contextlib.contextmanager
def sole_driver(folder: Path | None) -> Iterator[None]:
    """Hold the sweep folder's :data:`DRIVER_LOCK` while the sweep runs (:func:`~tune_attn.files.sole_writer`);
    refuse (ValueError) a second driver of the same sweep (the same ``--name`` run again in another terminal, or
    a job started again while the first still runs): both would restore and write the same Tune experiment.
    Nothing is locked for a URI (None)."""
    if folder is None:
        yield
        return
    with sole_writer(
        folder,
        DRIVER_LOCK,
        lambda holder: ValueError(
            f"{folder}: this sweep is running now ({holder}); wait for it to end, or stop it (Ctrl+C) and run this "
            "again to continue it, or give another --name"
        ),
    ):
        yield


def running_driver(folder: Path) -> str | None:
    """Whether a driver runs the sweep in the local ``folder`` now, told by its :data:`DRIVER_LOCK`: who (``pid
    4242 on head-0, since ...``) while one holds it; ``""`` when none does (the sweep ended, was stopped, or its
    driver died: its trials are not training); None when it cannot be told (no lock file: a copy of a sweep,
    one at a URI or of an earlier version; a file system without locks)."""
    return lock_holder(folder, DRIVER_LOCK)


RESUME_KEEPS = {
    "num_samples": "--num-samples",
    "max_concurrent": "--max-concurrent",
    "scheduler": "--scheduler",
    "asha_grace": "--asha-grace",
    "sampler": "--sampler",
    "startup_trials": "--startup-trials",
    "seed": "--seed",
    "max_failures": "--max-failures",
    "reuse_actors": "--reuse-actors",
    "prune": "--prune",
    "fixed": "--set",
    "tries": "--try",
}
"""The options a resumed sweep keeps from its start (Tune restores its searcher and scheduler), by flag."""


TAKEN_ON_RESUME = {
    "address": "--address",
    "cpus_per_trial": "--cpus-per-trial",
    "gpus_per_trial": "--gpus-per-trial",
    "wandb": "--wandb",
    "wandb_project": "--wandb-project",
}
"""Options a resumed sweep takes from the command that resumes it (not from its start), by flag: the command
that continues a sweep (:func:`resume_command`) gives the ones it started with."""


def resume_command(folder: Path) -> str:
    """The command that continues the sweep in the local ``folder``, from its :data:`SWEEP_RECORD`: ``tune-attn
    sweep SPACE --name NAME --storage STORAGE --resume``, with the ``--set`` values it started with (the space
    it keeps), and those of :data:`TAKEN_ON_RESUME` that it started with other than their defaults (``--address
    auto``, ``--gpus-per-trial 0.25``, ``--wandb off``...), so that it goes on as it started."""
    record = json.loads((folder / SWEEP_RECORD).read_text())
    started = record.get("options", {})
    args = [record.get("space_file", "SPACE.yaml"), "--name", folder.name, "--storage", str(folder.parent)]
    args += [x for fixed in started.get("fixed") or [] for x in ("--set", fixed)]
    defaults = vars(SweepOptions())
    for key, flag in TAKEN_ON_RESUME.items():
        value = started.get(key, defaults[key])
        if value != defaults[key] and value is not None:
            args += [flag, str(value)]
    return shlex.join(["tune-attn", "sweep", *args, "--resume"])


def missing_folders(roots: list[str]) -> list[str]:
    """Those of ``roots`` that are not folders on this machine."""
    return [root for root in roots if not os.path.isdir(root)]


def missing_files(paths: list[str]) -> list[str]:
    """Those of ``paths`` that are not files on this machine."""
    return [path for path in paths if not os.path.isfile(path)]


def check_sweep(
    space_path: str | Path, options: SweepOptions
) -> tuple[SearchSpace, SweepOptions, str, list[str]]:
    """The space loaded and the options checked against it and this machine, before Ray starts; a ValueError
    (:class:`~tune_attn.tune.search.SpaceError` for the space) names what is wrong and what would do.

    Returns the space, the options (``address`` from ``RAY_ADDRESS`` when none was given, as ``ray.init()``
    reads it: ``ray job submit`` sets it), where the address came from (``--address`` or ``RAY_ADDRESS``) and
    notes to show (:func:`check_data`'s).
    """
    space = SearchSpace.load(space_path, options.fixed)
    max_epochs = int(space.max_value("train.epochs"))
    if options.scheduler == "asha" and options.asha_grace >= max_epochs:
        raise ValueError(
            f"--asha-grace {options.asha_grace} leaves ASHA nothing to stop: {space_path} trains at most "
            f"{max_epochs} epochs (train.epochs); choose a grace below {max_epochs}"
        )
    if not options.gpus_per_trial and "cuda" in space.values("train.device"):
        raise ValueError(
            f"{space.source}: train.device can be 'cuda', but --gpus-per-trial is 0, so Ray gives the trials no "
            "GPU; pass --gpus-per-trial (1, or a fraction: 0.25 for four trials per GPU), or use train.device=auto"
        )
    flag = "--address"
    if not options.address and os.environ.get("RAY_ADDRESS"):  # as ray.init() does: `ray job submit` sets it
        options, flag = replace(options, address=os.environ["RAY_ADDRESS"]), "RAY_ADDRESS"
    relative = space.relative_paths()
    if options.address and relative:
        key, path = relative[0]
        what = "the data set's folder" if key == "data.root" else "the weights file"
        raise ValueError(
            f"{space.source}: {key} {path} is a relative path, but with {flag} {options.address} the trials run "
            f"on the cluster's nodes, each in a folder of its own: give an absolute path (or ~/...) to {what} there"
        )
    if not options.address:  # from here on, as the trials (which run in folders of their own) will read them
        space.resolve_paths(Path.cwd())
    missing = [] if options.address else missing_folders(space.data_roots())  # a cluster's: once Ray is up
    if missing:
        raise ValueError(
            f"{space.source}: data.root {missing[0]} is not a folder on this machine, where the trials run; "
            "give the folder holding the data set (tune-attn keys: data.root)"
        )
    absent = [] if options.address else missing_files(space.weights_files())
    if absent:
        raise ValueError(
            f"{space.source}: model.pretrained_path {absent[0]} is not a file on this machine, where the trials "
            "run; give the local file of the backbone's weights (a state dict), or leave the key out to start "
            "from random weights"
        )
    client = (options.address or "").startswith("ray://")
    if client and "://" not in options.storage and not Path(options.storage).is_absolute():
        raise ValueError(
            f"--storage {options.storage}: a relative path, but with {flag} {options.address} (Ray Client) "
            "the sweep runs on the cluster's head node: give an absolute path there, on a file system every node "
            "mounts, or a URI such as s3://bucket/sweeps"
        )
    if not client and "://" not in options.storage:  # refused with its name before Ray starts
        check_folder(Path(options.storage_path()), "--storage", "or a URI such as s3://bucket/sweeps")
    if len(options.tries) > options.num_samples:
        raise ValueError(
            f"--try: {len(options.tries)} configs to try, but --num-samples {options.num_samples} runs fewer trials"
        )
    if options.tries:  # read here, where the files are (a Ray Client sweep runs on the head node)
        options = replace(options, points=tuple(load_point(space, path) for path in options.tries))
    if not options.address:  # a cluster's nodes are looked at once Ray is up
        check_weights(space)
    # last: the data set's files are the slowest to check
    notes = [note] if not options.address and (note := check_data(space)) else []
    return space, options, flag, notes


def check_weights(space: SearchSpace) -> None:
    """Load each ``model.pretrained_path`` file of a local sweep (safely: a state dict only) and, where the space
    fixes the backbone's shape, fit it: a file that is no weights, or another network's, fails here once, naming
    it, instead of in every trial. torch is imported only when the space names such a file."""
    files = space.weights_files()
    if not files:
        return
    from tune_attn.models.backbones import build_backbone, load_weights_file

    shape = {k: space.values(f"model.{k}") for k in ("backbone", "width", "padding")}
    fixed = all(len(values) == 1 for values in shape.values())
    for path in files:
        try:
            if fixed:
                build_backbone(shape["backbone"][0], shape["width"][0], path, shape["padding"][0])
            else:
                load_weights_file(path)
        except ValueError as exc:
            raise ValueError(f"{space.source}: {exc}") from None


def check_data(space: SearchSpace) -> str | None:
    """Load the data set a local sweep's trials will all read, when the space fixes it (one ``data.name`` that
    reads a folder, one ``data.root``): a wrong layout, or files that are no images, fail here once, before Ray
    starts, instead of in every trial. Reads the listing and each file's header (torch is imported for it).
    Returns a note naming the classes without validation images (their accuracy is never measured), or None."""
    names, roots = space.values("data.name"), space.data_roots()
    if len(names) != 1 or len(roots) != 1:  # drawn (some trials may never read it), or synthetic (no root)
        return None
    from tune_attn.config import DataConfig
    from tune_attn.data import build_data

    # the split the trials make: the space's val_fraction and seed, or the defaults
    split = {k: space.values(f"data.{k}")[0] for k in ("val_fraction", "seed")}
    try:
        info = build_data(DataConfig(name=names[0], root=roots[0], **split)).info
    except ValueError as exc:  # DatasetError too
        raise ValueError(f"{space.source}: data.name {names[0]}, data.root {roots[0]}: {exc}") from None
    if "unvalidated" not in info:
        return None
    return (
        f"note: {roots[0]} has no validation images of {info['unvalidated']}: the trials train on them, but "
        "their accuracy is never measured (a class of one image, or one the val folder lacks)"
    )
