"""The ``tune-attn`` command line: one thin function per command over the library."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tune_attn.config import (
    RunConfig,
    WandbOptions,
    absolute_root,
    check_folder,
    describe_keys,
    load_config,
    shown_value,
)
from tune_attn.files import RUN_LOCK, sole_writer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Hyperparameter search for attention CNNs."
)
console = Console(soft_wrap=True)  # paths and commands stay on one line, to copy
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file, or a folder holding config.yaml (a bundle, a run, a sweep's trial), or a sweep "
        "folder (its pick, as best picks it).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a key, e.g. --set model.heads=4 (repeatable)."),
]


WandbOpt = Annotated[
    str, typer.Option("--wandb", help="W&B: offline (local runs, `wandb sync` later), online, or off.")
]
WandbProjectOpt = Annotated[str, typer.Option(help="W&B project.")]
WandbEntityOpt = Annotated[str | None, typer.Option(help="W&B entity (user or team).")]


def _tell_wandb_runs(runs: list[Path], where: str = "") -> None:
    from tune_attn.tracking import sync_command

    if runs:
        console.print(
            f"W&B: {len(runs)} offline run(s){where}; upload them with: {sync_command(runs)}", highlight=False
        )


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _check_json_out(json_out: Path | None, example: str) -> None:
    """Refuse a ``--json`` path that cannot be written, before any work: a folder, or a file in no folder."""
    if json_out is not None and json_out.is_dir():
        raise _fail(
            f"--json {json_out}: a folder; give the path of a file to write, e.g. {json_out / example}"
        )
    if json_out is not None and not json_out.parent.is_dir():
        raise _fail(f"--json {json_out}: no folder {json_out.parent} to write it in")


@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/train-<time>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its checkpoint.")] = False,
    prune: Annotated[bool, typer.Option(help="Stop when the degeneracy monitor says prune.")] = False,
    wandb: WandbOpt = "offline",
    wandb_project: WandbProjectOpt = "tune-attn",
    wandb_entity: WandbEntityOpt = None,
) -> None:
    """Train one config, writing metrics, per-epoch mask panels and a checkpoint to the run folder."""
    if resume and out is None:
        raise _fail("--resume needs --out, the run folder to continue")
    if resume and config is None and out is not None and (out / "config.yaml").is_file():
        config = out / "config.yaml"
    out = out or Path("runs") / f"train-{dt.datetime.now():%Y%m%d-%H%M%S}"
    try:
        if config is not None and config.is_dir():  # a bundle, run, trial or sweep folder: its config.yaml
            from tune_attn.leaderboard import config_source

            folder, stands_for = config_source(config, "--config")
            if not (Path(folder) / "config.yaml").is_file():
                raise ValueError(
                    f"--config {config}: a folder without config.yaml; give a config file, or a bundle, run, "
                    "trial or sweep folder"
                )
            if stands_for:
                console.print(stands_for, highlight=False)
            config = Path(folder) / "config.yaml"
        cfg = load_config(config, set_ or [])
        # Recorded absolute in the run's config.yaml: a bundle of it, or `--config` of it, is read elsewhere.
        cfg.data.root = absolute_root(cfg.data.root)
        cfg.model.pretrained_path = absolute_root(cfg.model.pretrained_path)
        check_folder(out, "--out")
        wandb_options = WandbOptions(wandb, wandb_project, wandb_entity)
    except ValueError as exc:  # ConfigError too
        raise _fail(str(exc)) from None
    if (out / "checkpoint.pt").exists() and not resume:
        raise _fail(f"{out}: holds a run already; add --resume to continue it, or choose another --out")
    # One process trains into a folder: the same command started twice would write both runs into one metrics.jsonl.
    made = not out.exists()
    busy = "a run is training into this folder now ({}); wait for it to end, or choose another --out"
    with sole_writer(out, RUN_LOCK, lambda holder: _fail(f"{out}: {busy.format(holder)}")):
        try:
            _train(cfg, out, resume, prune, wandb_options)
        finally:
            if made and [p.name for p in out.iterdir()] == [RUN_LOCK]:  # it failed before writing anything
                shutil.rmtree(out, ignore_errors=True)


def _train(cfg: RunConfig, out: Path, resume: bool, prune: bool, wandb_options: WandbOptions) -> None:
    """``tune-attn train`` once its arguments are checked and it holds the run folder."""
    # torch and the rest only for a valid command: a mistyped key or option is told at once, not ~3 s later
    from tune_attn.data import DatasetError
    from tune_attn.engine import EpochResult, Trainer, TrainingDiverged
    from tune_attn.run import panel_path, resumes, train_run
    from tune_attn.status import INTERRUPTED, interrupted_reason, interrupted_when
    from tune_attn.tracking import WandbRun, offline_runs, run_id

    try:
        trainer = Trainer(cfg, pretrained=not resumes(out, resume))
    except (DatasetError, ValueError) as exc:
        raise _fail(str(exc)) from None
    held_out = f" from {trainer.data.info['val']}" if "val" in trainer.data.info else ""
    console.print(
        f"training {cfg.model.backbone} + {cfg.model.activation} x{cfg.model.heads} on {cfg.data.name} "
        f"({len(trainer.data.train)} train / {len(trainer.data.val)} val{held_out}, {trainer.data.num_classes} classes) "
        f"on {trainer.device} -> {out}",
        highlight=False,
    )
    if "unvalidated" in trainer.data.info:
        console.print(
            f"note: no validation images of {trainer.data.info['unvalidated']}: trained on, but its accuracy is "
            "never measured (a class of one image, or one the val folder lacks)",
            highlight=False,
        )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("epoch", total=None, loss=float("nan"))

        def on_batch(done: int, total: int, loss: float) -> None:
            progress.update(
                task,
                description=f"epoch {trainer.epoch + 1}/{cfg.train.epochs}",
                completed=done,
                total=total,
                loss=loss,
            )

        def on_epoch(result: EpochResult) -> None:
            wb.log_epoch(result, panel_path(out, result.epoch))
            last.clear()
            last.update(result.metrics)
            m, s = result.metrics, result.stats.summary
            extra = f" object {s['object_mass']:.2f}" if "object_mass" in s else ""
            progress.console.print(
                f"epoch {result.epoch:3d}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
                f"val_accuracy {m['val_accuracy']:.4f}  entropy {s['entropy']:.2f}  corner {s['corner_mass']:.2f}"
                f"{extra}  {m['epoch_seconds']:.1f}s  detector {m['detector.kind']}",
                highlight=False,
            )
            if m["detector.prune"]:
                progress.console.print(f"  prune: {m['detector.reason']}", highlight=False)

        last: dict = {}
        wb = WandbRun(
            wandb_options,
            out,
            name=out.name,
            id=run_id(out.name, str(out.resolve())),
            job_type="train",
            config={**cfg.to_dict(), "device": str(trainer.device)},  # what train.device (auto, say) gave
        )

        def tell_wandb_problem() -> None:
            err.print(f"W&B: {wb.error}; the panels are still written to {out / 'panels'}", highlight=False)

        if wb.error:
            tell_wandb_problem()
        told = bool(wb.error)
        try:
            train_run(
                cfg, out, resume=resume, on_batch=on_batch, on_epoch=on_epoch, trainer=trainer, prune=prune
            )
        except KeyboardInterrupt:  # Ctrl+C: the checkpoint of the last finished epoch stays
            wb.finish(INTERRUPTED, interrupted_reason(last))
            console.print(
                f"interrupted {interrupted_when(last)}; "
                f"continue it with: tune-attn train --out {shlex.quote(str(out))} --resume",
                highlight=False,
            )
            raise typer.Exit(130) from None
        except BaseException as exc:
            wb.end(last, exc)
            if isinstance(exc, ValueError):
                raise _fail(str(exc)) from None
            if isinstance(exc, TrainingDiverged):  # the checkpoint of the epoch before stays
                raise _fail(
                    f"training diverged ({exc}); a lower train.lr or train.weight_decay may train", code=1
                ) from None
            raise
        wb.end(last)
    if wb.error and not told:
        tell_wandb_problem()
    console.print(
        f"done: panels in {out / 'panels'}, metrics in {out / 'metrics.jsonl'}, "
        f"checkpoint {out / 'checkpoint.pt'}",
        highlight=False,
    )
    _tell_wandb_runs(offline_runs(out) if wb.mode == "offline" else [])


@app.command()
def sweep(
    ctx: typer.Context,
    space: Annotated[Path, typer.Argument(help="Search space YAML (see search_spaces/).")],
    num_samples: Annotated[
        int,
        typer.Option(
            help="Number of trials. Given with the name of a sweep that has fewer, adds trials to it: the search "
            "carries on from every trial it has seen."
        ),
    ] = 8,
    max_concurrent: Annotated[int, typer.Option(help="Trials running at once.")] = 2,
    name: Annotated[
        str | None,
        typer.Option(
            help="Sweep name: its folder under --storage. Default: the space file's name and the time "
            "(default-20261127-101500), a new sweep each time. The name of an earlier sweep continues it."
        ),
    ] = None,
    storage: Annotated[
        str, typer.Option(help="Results folder, or a URI such as s3://bucket/prefix.")
    ] = "runs/sweeps",
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join: 'auto', HOST:PORT, or 'ray://HOST:10001' (Ray Client: the sweep runs on "
            "the head node, --storage is a path there); default: RAY_ADDRESS if set, else a local Ray."
        ),
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial.")] = 1.0,
    gpus_per_trial: Annotated[
        float, typer.Option(help="GPUs per trial (fractions allowed, e.g. 0.25).")
    ] = 0.0,
    scheduler: Annotated[str, typer.Option(help="asha or none.")] = "none",
    asha_grace: Annotated[
        int, typer.Option(help="With --scheduler asha: epochs every trial runs before ASHA may stop it.")
    ] = 2,
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe, or random (a baseline).")] = "tpe",
    startup_trials: Annotated[
        int | None,
        typer.Option(
            help="TPE: random trials before it models the results (default max(4, min(10, n / 4)))."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the Optuna sampler (0 to 2**32 - 1).")] = 0,
    max_failures: Annotated[
        int,
        typer.Option(
            help="Times a failed trial (an error, a lost node) is started again from its last checkpoint; -1: "
            "no limit. A NaN or infinite loss ends its trial at once (it would diverge again)."
        ),
    ] = 2,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted sweep of the same name.")] = False,
    prune: Annotated[bool, typer.Option(help="Stop trials whose attention masks collapse.")] = True,
    reuse_actors: Annotated[
        bool, typer.Option(help="Start a trial in a finished trial's process (no imports, no CUDA start).")
    ] = True,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Fix a key over the space file, e.g. --set train.epochs=12 (repeatable)."),
    ] = None,
    tries: Annotated[
        list[str] | None,
        typer.Option(
            "--try",
            help="A config to try first, before the search draws its own trials: a config file, a bundle or "
            "run folder (its config.yaml), or an earlier sweep's folder (its pick) or trial folder; the searched "
            "keys it sets are taken (repeatable).",
        ),
    ] = None,
    progress_every: Annotated[
        float, typer.Option(help="Seconds between status lines while trials train (0: every epoch).")
    ] = 60.0,
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Start no trial after this long (90m, 1.5h, 2h30m, or seconds); the running ones finish, and "
            "--resume runs the rest."
        ),
    ] = None,
    wandb: WandbOpt = "offline",
    wandb_project: WandbProjectOpt = "tune-attn",
    wandb_entity: WandbEntityOpt = None,
) -> None:
    """Run a hyperparameter sweep: Ray Tune trials, Optuna TPE, and degeneracy pruning."""
    from tune_attn.leaderboard import config_source
    from tune_attn.tune.options import (
        SweepOptions,
        check_sweep,
        claim_new_sweep,
        new_sweep_name,
        parse_duration,
        release_unused,
        shown_duration,
        sweeps_in,
    )

    if resume and name is None:
        sweeps = sweeps_in(storage)
        raise _fail(
            "--resume needs --name, the sweep to continue"
            + (f"; the sweeps in {storage}, newest first: {', '.join(sweeps[:5])}" if sweeps else "")
        )
    try:
        read = [config_source(t) for t in tries or ()]  # an earlier sweep's folder: its pick
        for _, stands_for in read:
            if stands_for:
                console.print(stands_for, highlight=False)
        options = SweepOptions(
            name=name or new_sweep_name(space),
            storage=storage,
            num_samples=num_samples,
            max_concurrent=max_concurrent,
            address=address,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            scheduler=scheduler,
            asha_grace=asha_grace,
            sampler=sampler,
            startup_trials=startup_trials,
            seed=seed,
            max_failures=max_failures,
            resume=resume,
            prune=prune,
            reuse_actors=reuse_actors,
            fixed=tuple(set_ or ()),
            tries=tuple(path for path, _ in read),
            progress_seconds=progress_every,
            time_budget=None if time_budget is None else parse_duration(time_budget),
            wandb=wandb,
            wandb_project=wandb_project,
            wandb_entity=wandb_entity,
            given=_given(ctx, {"set_": "fixed", "progress_every": "progress_seconds"}),
        )
        check_sweep(space, options)  # told in well under a second, before Ray and torch are imported (~3 s)
        if name is None:
            options = claim_new_sweep(options)
    except ValueError as exc:  # SpaceError too
        raise _fail(str(exc)) from None
    from tune_attn.tune.summary import count_statuses, pruned_ahead_note
    from tune_attn.tune.sweep import HeadUnanswered, run_sweep

    if name is None:  # said first, so that a driver that dies can still be continued
        console.print(
            f"new sweep {options.name} in {options.storage} (to continue it after a stop: --name {shlex.quote(options.name)} "
            "--resume)",
            highlight=False,
        )

    unanswered = False
    try:
        result = run_sweep(
            space, options, echo=lambda line: console.print(line, highlight=False, markup=False)
        )
    except ValueError as exc:  # what only Ray could tell (a cluster's resources)
        raise _fail(str(exc)) from None
    except HeadUnanswered as exc:
        console.print(str(exc), highlight=False)
        unanswered = True
    finally:
        if name is None:
            release_unused(options)
    if unanswered:  # Ray's disconnect at exit would wait on that head too: leave without it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    counts = count_statuses(r["status"] for r in result.rows)
    if result.budget_reached and not result.interrupted:
        assert options.time_budget is not None
        waiting = result.planned - result.started
        again = _this_sweep_again(name is None, options.name)
        console.print(
            f"sweep stopped at its time budget ({shown_duration(options.time_budget)}): {counts}; "
            f"{waiting} of {result.planned} trials not started. Run them with: tune-attn {shlex.join(again)}",
            highlight=False,
        )
    elif result.interrupted:
        waiting = result.planned - result.started
        again = _this_sweep_again(name is None, options.name)
        console.print(
            f"sweep interrupted: {counts or 'no trial started'}"
            + (f"; {waiting} of {result.planned} trials not started yet" if waiting > 0 else "")
            + f". Continue it with: tune-attn {shlex.join(again)}",
            highlight=False,
        )
    else:
        console.print(f"sweep finished: {counts}", highlight=False)
    line = _best_line(result.rows)
    if line:
        console.print(line, highlight=False)
    note = pruned_ahead_note(result.rows, result.path)
    if note:
        console.print(note, highlight=False)
    where = " on the cluster's head node" if result.on_head else ""
    console.print(
        f"results{where}: {result.path} (summary.csv, summary.json, the Optuna study in "
        "study.db; each trial's panels under trial_*/run/panels)",
        highlight=False,
    )
    _tell_wandb_runs(result.wandb_runs, where)
    if "://" in result.path and result.wandb_mode == "offline":
        console.print(
            f"W&B: the offline runs are under {result.path} with the trials' run folders; fetch the sweep with: "
            f"tune-attn fetch {shlex.quote(result.path)} DIR (it prints the wandb sync command), or use --wandb online",
            highlight=False,
        )
    console.print(
        _next_step(result.rows, result.path, bool(where) and "://" not in result.path), highlight=False
    )
    if result.interrupted:
        raise typer.Exit(130)  # as a shell reports a command stopped by Ctrl+C


def _this_sweep_again(named_here: bool, name: str) -> list[str]:
    """This command's arguments, continuing this very sweep: ``--resume``, and ``--name`` where it got its name
    here."""
    again = [*sys.argv[1:], *(["--name", name] if named_here else [])]
    return again + ([] if "--resume" in again else ["--resume"])


MetricOpt = Annotated[
    str, typer.Option(help="Rank by last_val_accuracy (the exported weights' epoch) or best_val_accuracy.")
]
MinObjectOpt = Annotated[
    float | None,
    typer.Option(
        help="Pick only trials with at least this share of mask mass on the object (mask.object_mass)."
    ),
]


@app.command()
def best(
    experiment: Annotated[
        str,
        typer.Argument(
            help="A sweep folder (finished or still running), or its URI (s3://bucket/sweeps/name)."
        ),
    ],
    metric: MetricOpt = "last_val_accuracy",
    min_object_mass: MinObjectOpt = None,
    show_pruned: Annotated[bool, typer.Option(help="List pruned, stopped and failed trials too.")] = False,
    top: Annotated[int, typer.Option(min=1, help="Rows in the leaderboard.")] = 10,
    export: Annotated[Path | None, typer.Option(help="Export the picked trial's bundle here.")] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write the pick (its config, run folder and figures, or why there is none) and every "
            "trial to this JSON file, for a script that deploys it.",
        ),
    ] = None,
) -> None:
    """Leaderboard of a sweep and the best trial whose masks are healthy at the end."""
    from tune_attn.files import write_json
    from tune_attn.leaderboard import (
        pick_report,
        rank,
        read_sweep_at,
        searched_keys,
        sweep_state,
        was_drawn,
        why_no_pick,
    )

    _check_json_out(json_out, "pick.json")
    try:
        rows = read_sweep_at(experiment)
        board, pick = rank(rows, metric, min_object_mass, show_pruned)
    except ValueError as exc:  # SweepError too
        raise _fail(str(exc)) from None
    if json_out is not None:  # first: a leaderboard cut short (piped into head) still leaves the file
        write_json(json_out, pick_report(experiment, rows, metric, min_object_mass))
    keys = searched_keys(rows)
    by_number = sorted((r for r in rows if r.get("tried")), key=lambda r: r.get("number") or 0)
    tries = list(dict.fromkeys(r["tried"] for r in by_number))  # the sweep's --try files, in their order
    if board:  # else only why nothing can be picked
        console.print(_leaderboard(board[:top], pick, metric, keys, tries), highlight=False)
    shown = [k for k, path in enumerate(tries, 1) if any(r.get("tried") == path for r in board[:top])]
    if shown:
        console.print(
            "; ".join(f"(try {k}): the config of --try {tries[k - 1]}" for k in shown), highlight=False
        )
    if any(not was_drawn(r, k) for r in board[:top] for k in keys):
        console.print(
            "(a key shown as - or left out was not drawn for that trial, as the space's `when` says; it trained "
            "with the config's value, in its config.yaml)",
            highlight=False,
        )
    state = sweep_state(experiment, rows)
    if state:
        console.print(state, highlight=False, markup=False)
    if pick is None:
        if json_out is not None:
            console.print(f"every trial, and why none is picked, written to {json_out}", highlight=False)
        raise _fail(
            "no trial completed with healthy masks"
            + (" and enough mass on the object" if min_object_mass else "")
            + (" yet" if state.startswith("the sweep is running") else "")
            + f" ({why_no_pick(rows, min_object_mass, show_pruned)})",
            1,
        )
    console.print(
        f"best: trial {pick['trial_id']} {metric} {_num(pick.get(metric))} (run folder {pick['run']})",
        highlight=False,
    )
    if export is not None:
        _export(experiment, pick["trial_id"], export)
        console.print(f"exported to {export}", highlight=False)
    if json_out is not None:
        console.print(f"the pick and every trial written to {json_out}", highlight=False)


@app.command()
def sweeps(
    storage: Annotated[str, typer.Argument(help="A local --storage folder.")] = "runs/sweeps",
) -> None:
    """The sweeps in a --storage folder, the newest first: trials, statuses and each one's best trial."""
    from tune_attn.leaderboard import SweepError, list_sweeps

    try:
        found = list_sweeps(storage)
    except SweepError as exc:
        raise _fail(str(exc)) from None
    if not found:
        raise _fail(f"{storage}: no sweeps in it (a sweep's folder holds its sweep.json)", 1)
    for s in found:
        started = s["started"][:16].replace("T", " ")  # 2026-11-27 10:15
        counts = ", ".join(f"{n} {status}" for status, n in sorted(s["statuses"].items())) or "none ended"
        best = "no healthy pick" if s["best"] is None else f"best {s['best']:.3f} ({s['best_trial']})"
        if s["state"] == "running":
            best += f"; running now ({s['driver']})"
        elif s["state"] == "stopped":
            best += "; stopped before it ended (--resume continues it)"
        console.print(
            f"{s['name']}  {started}  {s['space']}  {s['trials']} of {s['planned']} trials: {counts}; {best}",
            highlight=False,
            markup=False,
        )
    console.print(
        f"look at one with: tune-attn best {shlex.quote(str(Path(storage) / found[0]['name']))}",
        highlight=False,
    )


def _export(experiment: str, trial: str, out: Path) -> None:
    """Export ``trial`` of the sweep at ``experiment`` (a folder or a URI) into ``out``, or fail naming why."""
    from tune_attn.export import BundleError, export_trial

    try:
        export_trial(experiment, trial, out)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


def _export_run(run: str, out: Path) -> None:
    """Export a `tune-attn train` run folder into ``out``, saying so when its masks or its end are not those of a
    config `best` would pick; or fail naming why."""
    from tune_attn.export import BundleError, export_bundle
    from tune_attn.leaderboard import read_run
    from tune_attn.status import pickable

    try:
        row = read_run(run)
        if not pickable(row):
            console.print(
                f"note: the run is {row['status']} with {row.get('detector.kind') or 'unknown'} masks at the end"
                + (f" ({row['reason']})" if row["reason"] else "")
                + ": `best` never picks a sweep's trial like it (its model card says so too)",
                highlight=False,
                markup=False,
            )
        export_bundle(row, out)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"exported run {run} (epoch {row['epochs']}) to {out}", highlight=False)


@app.command("export")
def export_(
    experiment: Annotated[
        str,
        typer.Argument(
            help="A sweep folder, or its URI (s3://bucket/sweeps/name); or a `tune-attn train` run folder."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")],
    trial: Annotated[str | None, typer.Option(help="Export this trial id instead of the best one.")] = None,
    metric: MetricOpt = "last_val_accuracy",
    min_object_mass: MinObjectOpt = None,
) -> None:
    """Write a deployable bundle (config, weights, torch.export model, panel, model card) of a sweep's trial,
    or of a `tune-attn train` run."""
    from tune_attn.leaderboard import (
        SweepError,
        find_trial,
        is_run_folder,
        is_uri,
        rank,
        read_sweep_at,
        trial_of_run,
    )
    from tune_attn.status import pickable

    if not is_uri(experiment) and not Path(experiment).exists():
        raise _fail(
            f"{experiment}: no such folder; give a sweep folder (or its URI) or a `tune-attn train` run folder"
        )
    if is_run_folder(experiment):
        of_trial = trial_of_run(experiment)
        if of_trial is None:
            if trial is not None or min_object_mass is not None or metric != "last_val_accuracy":
                raise _fail(
                    f"{experiment}: a run folder holds one model; --trial, --metric and --min-object-mass choose "
                    "among a sweep's trials"
                )
            _export_run(experiment, out)
            return
        if trial is not None and trial != of_trial[1]:
            raise _fail(f"{experiment}: the run folder of trial {of_trial[1]}, not of --trial {trial}")
        experiment, trial = str(of_trial[0]), of_trial[1]  # a sweep trial's run folder: that trial
    try:
        rows = read_sweep_at(experiment)
        row = find_trial(rows, trial) if trial else rank(rows, metric, min_object_mass)[1]
        if row is None:
            raise SweepError(f"{experiment}: no trial completed with healthy masks; choose one with --trial")
    except ValueError as exc:  # SweepError too
        raise _fail(str(exc)) from None
    if not pickable(row):  # asked for with --trial: exported all the same, but said
        console.print(
            f"note: trial {row['trial_id']} is {row['status']} with {row.get('detector.kind') or 'unknown'} masks "
            "at the end: `best` never picks such a trial (its model card says so too)",
            highlight=False,
            markup=False,
        )
    _export(experiment, row["trial_id"], out)
    console.print(f"exported trial {row['trial_id']} to {out}", highlight=False)


@app.command()
def fetch(
    experiment: Annotated[
        str, typer.Argument(help="A sweep's URI (s3://bucket/sweeps/name, as --storage gave it).")
    ],
    out: Annotated[
        Path,
        typer.Argument(
            help="A new or empty local folder, or an earlier copy of the sweep to bring up to date."
        ),
    ],
) -> None:
    """Copy a sweep from its URI to a local folder: summary, plots, each trial's run folder (mask panels,
    metrics, offline W&B run) and Ray's results, not the checkpoints; then say how to upload its W&B runs.
    Into an earlier copy (a sweep still running, a fetch stopped half way) only what is new or changed comes."""
    from tune_attn.leaderboard import SweepError, check_fetch_folder, fetch_sweep, is_uri
    from tune_attn.tracking import offline_runs

    if not is_uri(experiment):
        raise _fail(f"{experiment}: not a URI; a local sweep folder needs no fetching")
    try:
        check_fetch_folder(experiment, out)
        copied = fetch_sweep(experiment, out, everything=True)
    except SweepError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"fetched {experiment} to {out} ({copied} file{'' if copied == 1 else 's'} new or changed); pick the best "
        f"config with: tune-attn best {shlex.quote(str(out))}",
        highlight=False,
    )
    runs = offline_runs(out)
    _tell_wandb_runs(runs)
    if any(run.parent == out / "wandb" for run in runs):
        console.print(
            "W&B: from this copy every run uploads but the sweep run's trials table (a W&B artifact, staged on "
            "the machine that ran the sweep); its rows are in summary.csv, its pictures in the trials' runs",
            highlight=False,
        )


@app.command()
def predict(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by export.")],
    images: Annotated[list[Path], typer.Argument(help="Image files, or folders of them.")],
    overlays: Annotated[
        Path | None,
        typer.Option(
            help="Write the <image>.attention.png overlays into this folder, not next to each image."
        ),
    ] = None,
    no_overlays: Annotated[
        bool,
        typer.Option("--no-overlays", help="Classify only: no overlay (the overlays take 9/10 of the time)."),
    ] = False,
) -> None:
    """Class and probability per image, on the CPU, a line each as they are done; writes <image>.attention.png
    next to each image (or into --overlays). An image that cannot be read is named on stderr, the others go on
    (exit code 1 at the end)."""
    from tune_attn.data import DatasetError
    from tune_attn.export import BundleError, image_files, load_bundle
    from tune_attn.export import predict as run_predict

    try:
        paths = image_files(images)
        loaded = load_bundle(bundle)
        unread = 0
        for p in run_predict(loaded, paths, overlays, draw=not no_overlays):
            if p.error:
                unread += 1
                typer.echo(p.error, err=True)
            else:  # tab-separated, for scripts
                typer.echo(f"{p.image}\t{p.label}\t{p.probability:.4f}\t{p.overlay or '-'}")
    except (BundleError, DatasetError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    if unread:
        raise _fail(f"{unread} of {len(paths)} images could not be read (named above)", 1)


def _best_line(rows: list[dict[str, Any]]) -> str:
    """The end of a sweep's word on its best trial: the one `best` picks (completed, healthy masks at the end),
    and the most accurate completed trial where that one is not it (a --no-prune sweep completes degenerate
    trials)."""
    from tune_attn.leaderboard import why_no_pick
    from tune_attn.status import the_pick

    pick = the_pick(rows)
    top = the_pick(rows, eligible=lambda r: r["status"] == "completed")  # the most accurate completed trial
    if top is None:
        if not rows:
            return ""
        pruned = [r for r in rows if str(r["status"]).startswith("pruned:")]
        ahead = max(pruned, key=lambda r: r.get("best_val_accuracy") or -1.0, default=None)
        if ahead is None or ahead.get("best_val_accuracy") is None:
            return "no trial completed, so none can be picked"
        return (
            f"no trial completed, so none can be picked ({why_no_pick(rows, show_pruned=True)}); the most accurate "
            f"pruned one, {ahead['trial_id']}, reached {ahead['best_val_accuracy']:.3f} before it was stopped. If "
            "such masks are what this data gives, sweep with --no-prune (the verdicts are still recorded) or set "
            "the detector's thresholds (tune-attn keys: detector.*)"
        )
    line = (
        f"best trial (completed, healthy masks): {pick['trial_id']} val_accuracy {pick['last_val_accuracy']:.3f}"
        if pick is not None
        else "no completed trial has healthy masks at the end"
    )
    if top is not pick:
        line += (
            f"; the most accurate completed trial, {top['trial_id']} ({top['last_val_accuracy']:.3f}), ends with "
            f"{top.get('detector.kind')} masks"
        )
    return line


def _next_step(rows: list[dict[str, Any]], path: str, there: bool) -> str:
    """A sweep's last line: the command that picks and exports its best trial, or, when `best` would have none
    to pick, the one that lists every trial and how it ended."""
    from tune_attn.status import pickable

    where = " (there)" if there else ""
    if any(pickable(r) for r in rows):
        return f"pick and export the best config{where}: tune-attn best {shlex.quote(path)} --export DIR"
    return (
        f"review the trials{where}, none can be picked yet: tune-attn best {shlex.quote(path)} --show-pruned"
    )


def _num(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _given(ctx: typer.Context, renamed: dict[str, str]) -> frozenset[str]:
    """The parameters given on the command line (or by an environment variable), not left at their default;
    named as the options object names them (``renamed``: the parameter's name to the option's)."""
    defaults = ("DEFAULT", "DEFAULT_MAP")  # by name: typer's ParameterSource is its own click's, not click's
    return frozenset(
        renamed.get(p, p)
        for p in ctx.params
        if getattr(ctx.get_parameter_source(p), "name", "DEFAULT") not in defaults
    )


def _leaderboard(
    rows: list[dict], pick: dict | None, metric: str, searched: list[str], tries: list[str]
) -> Table | str:
    """One row per trial with a column per searched key where that fits the terminal; where it does not, two
    lines per trial (figures, then ``key=value`` for the searched keys), so that no id or value is cut short.
    A key not drawn for a trial (its ``when`` did not hold: momentum of an AdamW trial) is ``-`` in the table
    and left out of the lines. The picked trial is marked ``*``, a trial of the k-th of ``tries`` (``--try``
    files) ``(try k)``."""
    from tune_attn.leaderboard import was_drawn

    names = {k: k.rsplit(".", 1)[-1] for k in searched}  # model.activation -> activation, where unambiguous
    if len(set(names.values())) < len(names):
        names = {k: k for k in searched}
    table = Table("trial", "status", metric, "masks", "object", "entropy", *names.values())
    lines = []  # the same, two lines per trial, for a terminal too narrow for the table
    for r in rows:
        trial = r["trial_id"] + (" *" if pick is not None and r["trial_id"] == pick["trial_id"] else "")
        trial += f" (try {tries.index(r['tried']) + 1})" if r.get("tried") in tries else ""
        figures = {
            metric: _num(r.get(metric)),
            "masks": str(r.get("detector.kind")),
            "object": _num(r.get("mask.object_mass")),
            "entropy": _num(r.get("mask.entropy")),
        }
        values = {name: shown_value(r["config"].get(k)) for k, name in names.items() if was_drawn(r, k)}
        table.add_row(
            trial, r["status"], *figures.values(), *(values.get(name, "-") for name in names.values())
        )
        lines.append("  ".join([trial, r["status"], *(f"{k} {v}" for k, v in figures.items())]))
        lines.append("    " + "  ".join(f"{k}={v}" for k, v in values.items()))
    if console.measure(table, options=console.options.update(max_width=100_000)).maximum <= console.width:
        return table
    return "\n".join(lines)


@app.command()
def keys() -> None:
    """List every config key with its type, default and meaning."""
    rows = [(key, tp, repr(default), doc) for key, tp, default, doc in describe_keys()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    if console.width >= sum(widths) + 13 + 40:  # the table's borders and padding, 40 columns of meaning
        table = Table("key", "type", "default", "meaning", show_lines=False)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    # Too narrow for the table (it would cut key names short: "detector.corner_min_bl…"): a line per key.
    for key, tp, default, doc in rows:
        console.print(f"{key}  {tp}  default {default}", highlight=False, markup=False)
        console.print(
            textwrap.fill(doc, max(40, console.width - 4), initial_indent="    ", subsequent_indent="    "),
            highlight=False,
            markup=False,
        )


@app.command()
def evaluate(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run folder (or its checkpoint.pt), a bundle folder written by export, or a sweep folder (its "
            "pick, as best picks it)."
        ),
    ],
    test: Annotated[
        bool,
        typer.Option(
            "--test",
            help="On the data set's test images, never read in training or picking: an imagefolder tree's test "
            "folder, Pets' annotations/test.txt, CIFAR-10's test_batch, new synthetic images.",
        ),
    ] = False,
    on: Annotated[
        Path | None,
        typer.Option(help="On a folder of labelled images, FOLDER/<class>/<image>, of the model's classes."),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write the results to this JSON file, for a script that decides on deploying: accuracy, "
            "accuracy per class, mask statistics.",
        ),
    ] = None,
) -> None:
    """Re-evaluate a saved run, a bundle (before deploying it) or a sweep's pick, on its validation set, its data
    set's test split or a folder of labelled images: accuracy, accuracy per class and mask statistics."""
    from tune_attn.engine import per_class
    from tune_attn.export import evaluate_saved
    from tune_attn.files import write_json

    if test and on is not None:
        raise _fail("--test and --on name two sets to evaluate on; give one")
    _check_json_out(json_out, "eval.json")
    try:
        done = evaluate_saved(run, str(on) if on is not None else None, test)
    except (FileNotFoundError, ValueError) as exc:  # BundleError, DatasetError too
        raise _fail(str(exc)) from None
    if json_out is not None:  # first: a report cut short (piped into head) still leaves the file
        write_json(json_out, {"saved": str(run), **done.to_dict()})
    result, names = done.evaluation, done.class_names
    if done.picked is not None:
        console.print(f"the sweep's pick, as best picks it: trial {done.picked}", highlight=False)
    images = "validation images" if done.on is None else "images"
    on_what = "" if done.on is None else f"  on {int(result.confusion.sum())} images: {done.on}"
    prefix = "val_" if done.on is None else ""
    console.print(
        f"epoch {done.epoch}  {prefix}loss {result.loss:.4f}  {prefix}accuracy {result.accuracy:.4f}{on_what}",
        highlight=False,
    )
    if done.recorded is not None:
        console.print(
            f"note: the bundle records val_accuracy {done.recorded:.3f} for {done.source} at epoch {done.epoch}; "
            "its weights give another: they may not be that model's (a bundle put together by hand), or the data "
            "set changed",
            highlight=False,
        )
    rows = per_class(result.confusion, names)
    console.print(f"accuracy per class (correct / {images}), the least accurate first:", highlight=False)
    width = max(len(r[0]) for r in rows)
    for name, correct, total, taken_for in rows:
        mistaken = f"  most often taken for {taken_for}" if taken_for else ""
        console.print(
            f"  {name:<{width}}  {correct}/{total}  {correct / total:.2f}{mistaken}", highlight=False
        )
    unseen = [n for n, row in zip(names, result.confusion, strict=True) if row.sum() == 0]
    if unseen:
        console.print(f"  no {images} of: {', '.join(unseen)}", highlight=False)
    console.print("mask statistics:", highlight=False)
    for key, value in done.stats.flat().items():
        console.print(f"  {key} {value:.4f}", highlight=False)
    if done.test_split is not None:
        console.print(
            f"this data set has test images, read in neither training nor picking ({done.test_split}): "
            f"tune-attn evaluate {shlex.quote(str(run))} --test",
            highlight=False,
        )
    if json_out is not None:
        console.print(f"results written to {json_out}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
