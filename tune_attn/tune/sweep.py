"""Build and run a sweep: Ray Tune trials, an Optuna (TPE) search, degeneracy pruning, optional ASHA.

:func:`run_sweep` is what ``tune-attn sweep`` calls. The search space is checked before Ray starts.
Results land in ``<storage>/<name>/``: Ray's own files, every trial's run folder (panels, metrics,
checkpoint) under its trial folder, ``summary.csv`` / ``summary.json`` with one row per trial, the plots and
the Optuna study (``study.db``). What a sweep run again under its name keeps, adds and finds left behind is
in :mod:`tune_attn.tune.resume`; reaching a Ray cluster and checking its nodes, in :mod:`tune_attn.tune.nodes`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shlex
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_attn.config import WandbOptions, shown_value
from tune_attn.status import (
    INTERRUPTED,
    LOST,
    METRIC,
    error_reason,
    failed_on,
    interrupted_reason,
    pickable,
    run_status,
    started_trials,
    the_pick,
)
from tune_attn.tracking import WandbRun, offline_runs, run_id, stop_service, trial_run_id
from tune_attn.tune.nodes import (
    NodeWatch,
    check_reachable,
    connect,
    named_nodes,
    trial_does_not_fit,
    unused_gpus,
)
from tune_attn.tune.options import (
    SWEEP_RECORD,
    SweepOptions,
    check_sweep,
    recorded,
    sole_driver,
)
from tune_attn.tune.resume import (
    add_trials,
    check_experiment_state,
    forgive_deleted_checkpoints,
    lost_rows,
    mark_lost,
    reopen_search,
    resume_differences,
)
from tune_attn.tune.search import SearchSpace
from tune_attn.tune.summary import SUMMARY_FIGURES, count_statuses, write_plots, write_study, write_table

progress_every: float = 60.0
"""This driver's ``--progress-every``: the progress callback reads it at every (re)start, since a resumed
sweep brings back the callback pickled at its start."""


def _print(line: str) -> None:
    print(line, flush=True)


progress_echo: Callable[[str], None] = _print
"""Where the progress callback writes its lines (read by name, like ``progress_every``): print, or the queue
of a sweep run from a Ray Client (:func:`_on_head`)."""
WANDB_TOLD: set[str] = set()
"""W&B problems already told to the user by this driver process (each is told once)."""
NODE_CHECK_TIMEOUT = 60.0
"""Seconds the check before the first trial waits for the nodes' answers."""
node_watch: NodeWatch | None = None
"""The running sweep's :class:`NodeWatch` (read by name from its Tune callback), None between sweeps."""
planned_trials: int | None = None
"""How many trials the running sweep was started with (a resumed one: its own), as Tune tells its callbacks at
every (re)start; read by name like ``progress_every``."""
ended_trials: set[str] | None = None
"""The ids of the running sweep's trials that ended (completed, stopped or failed), as its progress callback
saw them, those a resumed sweep had finished before included: a trial not in it was stopped by a Ctrl+C (Tune
marks those TERMINATED too). None until Tune's loop takes its first step (a resumed sweep that had finished
takes none)."""


@dataclass
class SweepResult:
    """Where the sweep wrote its results, one summary row per trial, and the Optuna study."""

    path: str
    rows: list[dict[str, Any]]
    study: Any
    wandb_runs: list[Path] = field(default_factory=list)
    """The offline W&B runs (trials and the sweep's own), for ``wandb sync``."""
    wandb_mode: str = "off"
    """How the sweep logged to W&B in the end: as asked, or ``off`` after a problem it told of at the start."""
    on_head: bool = False
    """The sweep ran on the cluster's head node (a Ray Client address): ``path`` is a path there."""
    planned: int = 0
    """How many trials the sweep was started with (a resumed sweep keeps its own number)."""
    budget_reached: bool = False
    """The search proposed no more trials once ``--time-budget`` had passed; the trials it had not started wait for
    ``--resume``."""

    @property
    def started(self) -> int:
        """How many of the sweep's trials Tune started (not counting :data:`~tune_attn.status.LOST` ones)."""
        return started_trials(self.rows)

    @property
    def interrupted(self) -> bool:
        """Whether the sweep was stopped before its end (Ctrl+C): some trials did not finish, or never
        started (and not for its time budget); ``--resume`` continues it."""
        cut = any(r["status"] == INTERRUPTED for r in self.rows)
        return cut or (self.started < self.planned and not self.budget_reached)


def _searcher(space: SearchSpace, options: SweepOptions) -> tuple[Any, Any]:
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from tune_attn.tune.searcher import DegeneracyAwareOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler: Any = (
        optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=options.tpe_startup_trials())
        if options.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=options.seed)
    )
    search = DegeneracyAwareOptunaSearch(
        space=space.sample,
        metric=METRIC,
        mode="max",
        sampler=sampler,
        points_to_evaluate=[dict(p) for p in options.points] or None,
    )
    return search, ConcurrencyLimiter(search, max_concurrent=options.max_concurrent)


def _progress_callback(keys: list[str]) -> Any:
    """A Tune callback that shows the sweep's progress (module-level state only: Tune pickles it).

    One line when a trial starts (its searched values), one when it ends (status, accuracy), and, while
    trials train, a status line at most every ``progress_every`` seconds: the running trials' epochs, the
    finished trials by status, and the best accuracy so far.
    """
    import importlib
    import time

    from ray.tune import Callback

    from tune_attn.tune.trainable import WANDB_ERROR

    module = __name__

    class Progress(Callback):
        def setup(
            self,
            stop: Any = None,
            num_samples: int | None = None,
            total_num_samples: int | None = None,
            **info: Any,
        ) -> None:  # at the start of every run, a resumed one too
            # by name: the module itself, not the copy of its globals pickled with this class
            sweep = importlib.import_module(module)
            self.every = float(sweep.progress_every)
            vars(sweep)["planned_trials"] = total_num_samples
            self.ended: list[str] = []  # the finished trials' statuses
            self.best = -math.inf
            self.epochs: dict[str, tuple[int, int]] = {}  # trial id -> (epoch, epochs budget)
            self.start = self.last_line = time.monotonic()
            self.fresh = False  # a result came in since the last line
            self.caught_up = False  # the trials a resumed sweep had finished are counted
            self.started: set[str] = set()
            self.budget_told = False

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            if not self.caught_up:
                self.caught_up = True
                vars(importlib.import_module(module))["ended_trials"] = set()
                for trial in trials:
                    if trial.status in ("TERMINATED", "ERROR"):
                        self._count(trial, trial.status == "ERROR")

        def say(self, line: str) -> None:
            importlib.import_module(module).progress_echo(line)
            self.last_line = time.monotonic()
            self.fresh = False

        def status(self) -> str:
            counts = count_statuses(self.ended)
            best = f"{self.best:.3f}" if self.best > -math.inf else "-"
            return (
                f"{len(self.epochs)} running, {len(self.ended)} done{': ' + counts if counts else ''}; "
                f"best healthy {best}"
            )

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.epochs.setdefault(trial.trial_id, (0, 0))
            if trial.trial_id in self.started:  # again, after a failure (said by on_trial_recover)
                return
            self.started.add(trial.trial_id)
            values = " ".join(
                f"{k.split('.')[-1]}={shown_value(trial.config[k])}" for k in keys if k in trial.config
            )
            self.say(f"{trial.trial_id}: started {values} | {self.status()}")

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            """A trial failed and Tune starts it again (``max_failures``): where, why, and from which epoch."""
            error = _error_text(trial)
            node = failed_on(error) or (trial.last_result or {}).get("node_ip")
            saved = trial.latest_checkpoint_result
            epoch = saved.metrics.get("epoch") if saved is not None else None
            again = f"from its checkpoint of epoch {epoch}" if epoch else "from the start"
            tries = f" of {trial.max_failures + 1}" if trial.max_failures >= 0 else ""
            self.say(
                f"{trial.trial_id}: failed{f' on {node}' if node else ''} (try {trial.num_failures}{tries}): "
                f"{_error_of(error)}; it starts again {again} | {self.status()}"
            )

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            self.epochs[trial.trial_id] = (int(result.get("epoch", 0)), int(result.get("epochs_budget", 0)))
            self.fresh = True
            problem = result.get(WANDB_ERROR)
            if problem and not WANDB_TOLD:
                WANDB_TOLD.add(problem)
                self.say(
                    f"W&B: {problem} (trial {trial.trial_id}). The sweep goes on and every trial's panels are "
                    "still written under trial_*/run/panels; further W&B problems are not shown."
                )

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            until = importlib.import_module("tune_attn.tune.searcher").propose_until
            planned = importlib.import_module(module).planned_trials or 0
            if not self.budget_told and until is not None and time.time() >= until and len(trials) < planned:
                self.budget_told = True  # said as it passes, before the searcher is next asked for a trial
                going = sum(t.status not in ("TERMINATED", "ERROR") for t in trials)  # running, or waiting to
                self.say(
                    "time budget reached: the search proposes no more trials"
                    + (f"; the {going} under way finish" if going else "")
                    + f" | {self.status()}"
                )
            now = time.monotonic()
            if not self.fresh or now - self.last_line < self.every or not self.epochs:
                return
            minutes, seconds = divmod(int(now - self.start), 60)
            self.say(f"[{minutes}m{seconds:02d}s] {self.status()} ({running_epochs(self.epochs)})")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._done(trial, error=False)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._done(trial, error=True)

        def _count(self, trial: Any, error: bool) -> tuple[str, str, Any]:
            importlib.import_module(module).ended_trials.add(trial.trial_id)
            status, reason = run_status(trial.last_result, error, METRIC)
            self.ended.append(status)
            acc = (trial.last_result or {}).get(METRIC)
            kind = (trial.last_result or {}).get("detector.kind")
            if acc is not None and pickable({"status": status, "detector.kind": kind}):
                self.best = max(self.best, acc)  # what `best` may pick
            return status, reason, acc

        def _done(self, trial: Any, error: bool) -> None:
            self.epochs.pop(trial.trial_id, None)
            status, reason, acc = self._count(trial, error)
            if error:
                reason = _error_of(_error_text(trial))
            acc_text = f" val_accuracy {acc:.3f}" if isinstance(acc, float) else ""
            self.say(
                f"{trial.trial_id}: {status}{acc_text}{' - ' + reason if reason else ''} | {self.status()}"
            )

    return Progress()


def running_epochs(epochs: dict[str, tuple[int, int]]) -> str:
    """The running trials in a progress line, by trial id: ``a1 epoch 3/12, b2 starting`` (``epochs``: trial id ->
    (epochs finished, epoch budget); a trial that has reported no epoch yet has no budget known: starting)."""
    return ", ".join(f"{t} epoch {e}/{n}" if n else f"{t} starting" for t, (e, n) in sorted(epochs.items()))


def _error_text(trial: Any) -> str:
    """A failed trial's error file, which Tune writes in the driver's copy of the trial folder ("" if none)."""
    try:
        return Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        return ""


def _error_of(text: str) -> str:
    """A failed trial's last error, one line, from its error file's ``text``."""
    return error_reason(text) if text.strip() else "an error (see the trial's error.txt)"


def run_sweep(
    space_path: str | Path, options: SweepOptions, echo: Callable[[str], None] = print
) -> SweepResult:
    """Check the space, start (or join) Ray, run the sweep to the end, write the summary.

    With a Ray Client address (``ray://host:10001``) this process only connects: the sweep runs in a task on
    the cluster's head node, where Tune keeps its experiment, and its lines are shown here as they come.
    """
    space, options, flag, notes = check_sweep(space_path, options)  # fails here, before Ray starts
    for note in notes:
        echo(note)
    wandb = options.wandb_options()
    problem = wandb.problem()
    if problem:
        echo(f"W&B: {problem}. W&B logging is off for this sweep; the panels are still written to disk.")
        wandb = WandbOptions("off")
    import ray

    # Ray Client's own line about passing log_to_driver to the server is noise in the sweep's output.
    logging.getLogger("ray.client_builder").setLevel(logging.WARNING)
    # Ray 2.60 warns at every new local Ray that it turned token authentication on (it is on: good, and the
    # README says so); its warning when token auth is *off* still shows.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_not_token_auth_on)
    if not ray.is_initialized():
        if options.address:
            if flag == "RAY_ADDRESS":
                echo(f"joining the Ray cluster at {options.address} (RAY_ADDRESS; unset it for a local Ray)")
            check_reachable(options.address, flag)
            connect(options.address, echo, flag)
        else:
            # "local": always a new embedded Ray, never one that `ray start` left running on this machine; without
            # Ray's usage stats (unless asked for), which probe cloud metadata addresses and report to Ray's server
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count())
        nodes = ray.nodes()
        misfit = trial_does_not_fit(nodes, options)
        if misfit and not options.address:  # Tune would wait for such a node forever
            ray.shutdown()
            raise ValueError(f"{misfit}; ask for less on this machine, or join a cluster with --address")
        if misfit:  # a cluster may still get such a node from its autoscaler
            echo(f"note: {misfit}; trials wait until such a node joins (an autoscaling cluster adds one)")
        idle = unused_gpus(nodes, options)
        if idle:
            echo(f"note: {idle}")
    space_file = str(Path(space_path).resolve())
    if ray.util.client.ray.is_connected():
        return _on_head(space, options, wandb, space_file, echo)
    with _progress_to(echo):
        return _run(space, options, wandb, space_file, echo)


def _not_token_auth_on(record: logging.LogRecord) -> bool:
    """A logging filter: every record but Ray's note that it turned token authentication on."""
    return not record.getMessage().startswith("Token authentication is enabled")


@contextlib.contextmanager
def watching_nodes(
    space: SearchSpace, options: SweepOptions, folder: Path | None, echo: Callable[[str], None]
) -> Iterator[NodeWatch]:
    """Check the nodes before any trial starts, and refuse (ValueError, every problem named) where trials would
    fail; then, while the sweep runs (the ``with`` body), let :func:`_node_watch_callback` check the nodes that
    join. ``folder``: the local --storage path, None for a URI."""
    global node_watch
    watch = NodeWatch(options, space.data_roots(), folder, space.source, files=space.weights_files())
    try:
        found = watch.answers(NODE_CHECK_TIMEOUT, watch.ask())
        note, problems = found.note(), found.problems(space.source, watch.storage)
        if note:
            echo(note)
        if problems:
            raise ValueError("; and ".join(problems))
        watch.late = set(watch.waiting())
        if watch.late:
            echo(
                f"note: {named_nodes(watch.waiting())} did not answer the node check within {NODE_CHECK_TIMEOUT:g} s; "
                "what it finds is shown when it answers"
            )
        node_watch = watch
        yield watch
        watch.poll(echo, force=True)  # the nodes that joined near the end
    finally:
        node_watch = None
        watch.close()


def _node_watch_callback() -> Any:
    """A Tune callback through which :data:`node_watch` looks at the nodes that join while the sweep runs (its
    state is module-level: Tune pickles its callbacks with the experiment)."""
    import importlib

    from ray.tune import Callback

    module = __name__

    class WatchNodes(Callback):
        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            sweep = importlib.import_module(module)
            if sweep.node_watch is not None:
                sweep.node_watch.poll(sweep.progress_echo)

    return WatchNodes()


HEAD_STOP_S = 300.0
"""After Ctrl+C on a Ray Client, how long the client waits for the head node's sweep to stop its trials and save
Tune's state (a second Ctrl+C leaves at once)."""


@dataclass
class _HeadStart:
    """The first item :func:`_run_queued` puts on its lines queue: the process to send SIGUSR1 to for a Ctrl+C
    (None: it cannot take it, and only Ray's cancel stops it)."""

    pid: int | None


@dataclass
class _HeadEnd:
    """The last item :func:`_run_queued` puts on its lines queue: the sweep's result, or None if it failed."""

    result: SweepResult | None


def _on_head(
    space: SearchSpace,
    options: SweepOptions,
    wandb: WandbOptions,
    space_file: str,
    echo: Callable[[str], None],
) -> SweepResult:
    """Run :func:`_run` in a task on the head node (the Ray Client server's node) and show its lines here.

    Tune, run from a Ray Client, puts its own driver there too; the experiment folder, the Optuna study and
    the summary must all be written where that driver runs, not on this machine. Ctrl+C here stops the sweep
    there as it stops a local one (Tune stops the trials and saves its state), and this waits for that."""
    import ray
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    lines = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": head})
    task = (
        ray.remote(_run_queued)
        .options(num_cpus=0, scheduling_strategy=head, max_retries=0)
        .remote(space, options, wandb, space_file, lines)
    )
    started: list[_HeadStart] = []  # the task's first item, once taken
    ended: list[_HeadEnd] = []  # its last

    def drain(wait: float = 0.5, until: threading.Event | None = None) -> None:
        """Show the lines the head put, until none comes for ``wait`` seconds, the task's last item or ``until``."""
        while not ended and not (until is not None and until.is_set()):
            try:
                item = lines.get(timeout=wait)
            except Empty:
                return
            if isinstance(item, _HeadStart):
                started.append(item)
            elif isinstance(item, _HeadEnd):
                ended.append(item)
            else:
                echo(item)

    # Ctrl+C sets `asked` rather than raising inside a Ray Client call: raised there, it lost the line being fetched
    # (seen in CI: a trial's "started" line). Once asked, the stop below runs with Python's own Ctrl+C again.
    asked = threading.Event()
    on_main = threading.current_thread() is threading.main_thread()  # where a signal handler can be set
    previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.set()) if on_main else None
    try:
        try:
            while not asked.is_set() and not ray.wait([task], timeout=0.5)[0]:
                drain(until=asked)
        finally:
            if on_main:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if asked.is_set():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        echo(
            "stopping the sweep on the head node: its trials stop and Tune saves its state there (Ctrl+C again "
            "to leave at once; trials started since its last save would be lost)"
        )
        deadline = time.monotonic() + HEAD_STOP_S

        def stop_and_wait() -> None:
            pid = started[0].pid if started else None
            if pid is None:
                ray.cancel(task)
            else:
                # Not Ray's cancel: it also makes the task's next wait on Ray raise KeyboardInterrupt, inside Tune
                # too, which then left without saving (seen: a trial started since Tune's last save was lost).
                stop = ray.remote(_stop_gently).options(num_cpus=0, scheduling_strategy=head, max_retries=0)
                try:
                    ray.get(stop.remote(pid), timeout=60)
                except Exception:  # the signal was not sent (the head busy, say): Ray's cancel, as before
                    ray.cancel(task)
            while not ended and time.monotonic() < deadline:
                drain(wait=1.0)

        answered = left = False
        try:
            # in a thread, bounded: a Ray Client call can wait forever on a head that stopped answering (seen
            # once on a loaded machine: the stop's first call never returned)
            answered = within(HEAD_STOP_S + 15, stop_and_wait)
        except KeyboardInterrupt:  # the second Ctrl+C
            left = True
        if ended and ended[0].result is not None:  # the CLI tells it as it tells an interrupted local sweep
            ended[0].result.on_head = True
            return ended[0].result
        again = f"run the same command with --name {shlex.quote(options.name)} --resume"
        if not answered and not left:
            raise HeadUnanswered(
                f"interrupted: the head node has not answered for {HEAD_STOP_S:.0f} s since the stop was asked (Ray "
                f"Client); the sweep there may still be running or stopping. To go on once it has stopped, {again}"
            ) from None
        if not ended:
            within(15, lambda: ray.cancel(task))
        echo(f"interrupted: the sweep on the head node is stopped; to go on, {again}")
        raise
    try:
        result: SweepResult = ray.get(task)
        result.on_head = True
    except ray.exceptions.RayTaskError as exc:  # a bad resume, say: the error as it would read here
        if isinstance(exc.cause, ValueError):
            raise exc.cause from None
        raise
    finally:
        drain()
    return result


class HeadUnanswered(Exception):
    """After Ctrl+C, the head node of a Ray Client sweep did not answer in time: its message says what to do.
    The command should leave without Ray's own disconnect, which would wait on that head too."""


def within(seconds: float, fn: Callable[[], None]) -> bool:
    """Run ``fn`` in a daemon thread and wait for it at most ``seconds``: True if it ended (its exception, if
    any, is raised here), False if it still runs. A Ctrl+C meanwhile raises KeyboardInterrupt here at once."""

    failed: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=body, daemon=True, name="tune-attn-bounded")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return False
    if failed:
        raise failed[0]
    return True


def _stop_gently(pid: int) -> None:
    """In a task on the head node: Ctrl+C for the sweep's process ``pid`` (:func:`_run_queued`)."""

    os.kill(pid, signal.SIGUSR1)


def _run_queued(
    space: SearchSpace, options: SweepOptions, wandb: WandbOptions, space_file: str, lines: Any
) -> SweepResult:
    """:func:`_run` in a Ray task, its lines (and the progress lines) put on the ``lines`` queue between a
    :class:`_HeadStart` and a :class:`_HeadEnd`. SIGUSR1 is its Ctrl+C: Tune, while it runs, stops the trials
    and saves its state on it (as on SIGINT); before, it raises KeyboardInterrupt. The task's process (a Ray
    worker, kept for later tasks) stops the W&B service its summary run started: Ray ends it without Python's
    exit, which left the service's socket folder behind."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    gentle = threading.current_thread() is threading.main_thread()  # where Python runs signal handlers
    previous = signal.signal(signal.SIGUSR1, interrupt) if gentle else None
    result = None
    try:
        lines.put(_HeadStart(os.getpid() if gentle else None))
        with _progress_to(lines.put):
            result = _run(space, options, wandb, space_file, lines.put)
        return result
    finally:
        if gentle:
            signal.signal(signal.SIGUSR1, previous if previous is not None else signal.SIG_DFL)
        stop_service()
        with contextlib.suppress(Exception):  # the client gone: nobody waits for it
            lines.put(_HeadEnd(result))


@contextlib.contextmanager
def _progress_to(echo: Callable[[str], None]) -> Iterator[None]:
    """The progress callback's lines go to ``echo`` meanwhile (as the sweep's own lines do)."""
    global progress_echo
    progress_echo = echo
    try:
        yield
    finally:
        progress_echo = _print


def _run(
    space: SearchSpace,
    options: SweepOptions,
    wandb: WandbOptions,
    space_file: str,
    echo: Callable[[str], None],
) -> SweepResult:
    """The sweep itself, in the process that runs Tune's driver (Ray is up), as its only driver: once the nodes
    are checked, :func:`_drive` takes the sweep folder's lock into ``held``, released when all is written."""
    with contextlib.ExitStack() as held:
        return _drive(space, options, wandb, space_file, echo, held)


def _drive(
    space: SearchSpace,
    options: SweepOptions,
    wandb: WandbOptions,
    space_file: str,
    echo: Callable[[str], None],
    held: contextlib.ExitStack,
) -> SweepResult:
    """The sweep itself (see :func:`_run`)."""
    import datetime

    began = datetime.datetime.now().isoformat(timespec="seconds")
    # Every epoch is a checkpoint; Tune's warning about frequent experiment snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Our progress lines are the sweep's output: not Ray's start box (its searcher shows as "SearchGenerator")
    # and TensorBoard hint (a path in Ray's temporary session folder), nor its "Wrote ... files" line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune.tune").setLevel(logging.WARNING)
    from ray import tune

    forgive_deleted_checkpoints()
    from tune_attn.tune.searcher import load_study
    from tune_attn.tune.trainable import AttentionTrial

    max_epochs = int(space.max_value("train.epochs"))
    storage = options.storage_path()
    path = f"{storage.rstrip('/')}/{options.name}"
    remote = "://" in path
    scheduler_name, prune = options.scheduler, options.prune
    tries: Sequence[str] = options.tries
    with contextlib.suppress(OSError, ValueError, KeyError):  # a resumed sweep keeps those it started with
        started = json.loads((Path(path) / SWEEP_RECORD).read_text())["options"]
        scheduler_name, prune = started["scheduler"], started.get("prune", prune)
        tries = started.get("tries", [])
    trainable = tune.with_resources(
        tune.with_parameters(
            AttentionTrial,
            prune=prune,
            wandb=wandb,
            experiment=None if remote else path,
            sweep=options.name,
            scheduler=scheduler_name,
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    with watching_nodes(space, options, None if remote else Path(storage), echo):
        held.enter_context(sole_driver(None if remote else Path(path)))  # nothing written before the check
        search = None  # a restored sweep brings its own searcher back
        local_exists = not remote and Path(path).is_dir()
        if not remote and not (Path(path) / SWEEP_RECORD).exists():  # provenance, for `best` / `export`
            Path(path).mkdir(parents=True, exist_ok=True)
            write_provenance(Path(path), space, options, space_file)
        if (options.resume or local_exists) and tune.Tuner.can_restore(path):
            if local_exists:
                check_experiment_state(Path(path))
            kept = resume_differences(Path(path), space, options) if local_exists else []
            echo(
                f"resuming the sweep in {path}"
                + (f"; it keeps the settings it started with, not these: {'; '.join(kept)}" if kept else "")
            )
            for row in mark_lost(Path(path), space) if local_exists else []:
                echo(f"{row['trial_id']}: lost - {row['reason']}")
            reopen_search(path)  # a sweep that ended at its time budget runs the trials it had not started
            if options.given is None or "num_samples" in options.given:
                had = add_trials(path, options.num_samples)
                if had < options.num_samples:
                    more = options.num_samples - had
                    echo(
                        f"adding {more} trial{'s' if more > 1 else ''} to its {had} ({options.num_samples} in "
                        "all); the search carries on from every trial it has seen"
                    )
            with _without_tunes_missing_results():
                tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            search, limited = _searcher(space, options)
            for tried, point in zip(options.tries, options.points, strict=True):
                values = " ".join(f"{k.split('.')[-1]}={shown_value(v)}" for k, v in point.items())
                drawn = [k.split(".")[-1] for k in space.left_to_draw(point)]
                echo(
                    f"trial to try first (--try {tried}): {values}"
                    + (f"; the search draws {', '.join(drawn)}" if drawn else "")
                )
            scheduler = None
            if options.scheduler == "asha":
                from ray.tune.schedulers import ASHAScheduler

                scheduler = ASHAScheduler(
                    time_attr="training_iteration", max_t=max_epochs, grace_period=options.asha_grace
                )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=METRIC,
                    mode="max",
                    search_alg=limited,
                    scheduler=scheduler,
                    num_samples=options.num_samples,
                    trial_dirname_creator=_trial_dirname,
                    reuse_actors=options.reuse_actors,
                ),
                run_config=tune.RunConfig(
                    name=options.name,
                    storage_path=storage,
                    failure_config=tune.FailureConfig(max_failures=options.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=1),
                    # A remote storage gets each trial's run folder (panels, W&B run) uploaded from where it ran.
                    sync_config=tune.SyncConfig(sync_artifacts=remote),
                    callbacks=[_progress_callback(space.searched_keys()), _node_watch_callback()],
                    verbose=0,
                ),
            )
        global progress_every, planned_trials, ended_trials
        progress_every, planned_trials, ended_trials = options.progress_seconds, None, None
        from tune_attn.tune import searcher as searcher_module  # read by the searcher, by name

        budget = options.time_budget
        searcher_module.propose_until = None if budget is None else time.time() + budget
        searcher_module.budget_reached = False
        with _without_tunes_resume_line(), _without_tunes_missing_results(), _sigterm_as_ctrl_c():
            grid = tuner.fit()
        # Let Tune's objects go now: after a Ctrl+C its loggers still hold the trials' result files open, and
        # this frame can outlive the sweep (a traceback that a lazy import keeps), so Python warned at exit.
        del tuner
        gc.collect()
    # A restored sweep's searcher lives inside the restored Tuner: read its study from the saved state.
    study = search.study if search is not None else load_study(path)
    rows = summary_rows(grid, space, study, ended_trials, tries)
    planned = planned_trials or len(rows)
    rows += lost_rows(path, rows, space)  # trials a driver that died started: kept, and told apart
    result = SweepResult(
        path,
        rows,
        study,
        wandb_mode=wandb.mode,
        planned=planned,
        budget_reached=searcher_module.budget_reached,
    )
    if not remote:
        write_table(Path(path), rows)
        _study_file(Path(path), study, options.name, echo)
        _tell_wandb_lost(wandb, options.name, rows)
        plots = write_plots(Path(path), rows, study, echo)
        log_sweep_run(wandb, Path(path), options, space, rows, plots, echo)
        result.wandb_runs = offline_runs(path)
    else:  # a URI (s3://, gs://, ...): write the summary here, then upload it next to Ray's files
        import tempfile

        import pyarrow.fs

        # A URI's sweep.json is written at the end: it keeps the time of the sweep's first start.
        started = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            fs, root = pyarrow.fs.FileSystem.from_uri(f"{path}/{SWEEP_RECORD}")
            with fs.open_input_stream(root) as f:
                started = json.loads(f.read())["started"]
        with tempfile.TemporaryDirectory() as tmp:
            write_table(Path(tmp), rows)
            _study_file(Path(tmp), study, options.name, echo)
            plots = write_plots(Path(tmp), rows, study, echo)
            write_provenance(Path(tmp), space, options, space_file, started or began)
            log_sweep_run(wandb, Path(tmp), options, space, rows, plots, echo, stage=False)
            pyarrow.fs.copy_files(tmp, path)
    return result


def _tell_wandb_lost(wandb: WandbOptions, sweep: str, rows: list[dict[str, Any]]) -> None:
    """Close each lost trial's W&B run (left open by the driver that died) with status ``lost`` and its reason,
    as every other trial's run ends with its own (a local sweep folder; a W&B problem is left unsaid here: the
    sweep's own run tells of it)."""
    import yaml

    for row in rows:
        if row["status"] != LOST or wandb.mode == "off":
            continue
        folder = Path(row["path"]) / "run"
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            config = {}
        run = WandbRun(
            wandb,
            folder,
            name=f"{sweep}/trial_{row['trial_id']}",
            id=trial_run_id(sweep, row["trial_id"]),
            job_type="trial",
            config={**config, "trial_id": row["trial_id"], "sweep": sweep},
        )
        run.finish(LOST, row["reason"])


def _study_file(folder: Path, study: Any, name: str, echo: Callable[[str], None]) -> None:
    """:func:`~tune_attn.tune.summary.write_study`, or a line saying why it could not be written: a copy for
    Optuna's tools, so the sweep's end (plots, W&B) goes on without it."""
    if study is None:
        return
    try:
        write_study(folder, study, name)
    except OSError as exc:
        echo(f"study.db: not written ({exc}); every trial is in summary.json and in Tune's searcher state")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """While Tune runs, a SIGTERM (``kill PID``, a stopped container or job) stops the sweep as Ctrl+C does:
    Tune saves its state, the summary and the W&B runs are written. Tune itself stops only on SIGINT; before,
    a SIGTERM aborted the driver with a stack dump. A second Ctrl+C or SIGTERM ends the process at once."""

    if threading.current_thread() is not threading.main_thread():  # a sweep run from a Ray Client
        yield
        return

    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # to whatever handles SIGINT now: Tune's, then Python's

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _without_log_lines(logger_name: str, starting: str) -> Iterator[None]:
    """Leave out the records of a logger whose message starts with ``starting``, for the ``with`` body."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(starting)

    logger = logging.getLogger(logger_name)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _without_tunes_resume_line() -> contextlib.AbstractContextManager[None]:
    """Leave out Tune's own advice after a Ctrl+C (``Resume experiment with: Tuner.restore(...)``, Python API):
    the sweep's caller tells how to go on with tune-attn's flags."""
    return _without_log_lines("ray.tune.tune", "Experiment has been interrupted")


def _without_tunes_missing_results() -> contextlib.AbstractContextManager[None]:
    """Leave out Tune's warning, as it restores a sweep or gathers its results, about trials that had started
    but reported nothing yet (``Failed to fetch metrics for 1 trial(s): ... both result.json and progress.csv
    were not found``): a trial stopped during its first epoch, which a resumed sweep starts again."""
    return _without_log_lines("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for")


def log_sweep_run(
    wandb: WandbOptions,
    folder: Path,
    options: SweepOptions,
    space: SearchSpace,
    rows: list[dict[str, Any]],
    plots: list[Path],
    echo: Callable[[str], None],
    stage: bool = True,
) -> None:
    """The sweep's own W&B run (job type ``sweep``): the summary as a W&B Table ``trials``, with each trial's
    mask panel at its last epoch (column ``last_panel``: the trials' masks side by side, sortable by any
    column) and whether it is the sweep's pick (column ``pick``, as ``tune-attn best`` picks), the plots, and in
    its summary the pick (``pick``: its trial id, "" when none; ``pick/val_accuracy``; ``pick/<key>``: the values
    drawn for it). ``stage``: W&B stages the table's files in ``folder`` (False where ``folder`` is a
    temporary one)."""
    if wandb.mode == "off":
        return
    pick = the_pick(rows)
    counts = Counter(row["status"] for row in rows)  # by full status: trials/pruned:flat
    config = {
        "space": {p.key: p.value if p.kind == "fixed" else p.kind for p in space.params},
        "space_file": space.source,
        "options": {k: v for k, v in vars(options).items() if not k.startswith("wandb")},
    }
    run = WandbRun(
        wandb,
        folder,
        name=f"{options.name}/summary",
        id=run_id(f"{options.name}-summary", f"{options.name}/summary"),
        job_type="sweep",
        config=config,
    )
    from tune_attn.run import panel_path  # torch is loaded already: the sweep imported the trainable

    panels = [  # each trial's mask panel at its last epoch, to compare the trials' masks in the table
        panel_path(Path(row["path"]) / "run", row["epochs"])
        if row.get("path") and row.get("epochs")
        else None
        for row in rows
    ]
    # Staged in the sweep folder (not in wandb's own folder of this machine's home): the trials table goes
    # wherever the folder goes, e.g. a volume that outlives the head of a Kubernetes RayJob. For a URI the
    # folder is a temporary one: wandb's own then, so that a `wandb sync` on this machine finds it.
    run.log_table(
        "trials",
        [{**row, "pick": row is pick} for row in rows],
        plots,
        {"last_panel": panels},
        folder / "wandb" / "staging" if stage else None,
    )
    chosen: dict[str, Any] = {"pick": ""}
    if pick is not None:  # its values, not a key its `when` left undrawn (None in the summary)
        keys = [p.key for p in space.params if p.kind != "fixed" and pick.get(p.key) is not None]
        chosen = {"pick": pick["trial_id"], "pick/val_accuracy": pick.get("last_val_accuracy")}
        chosen.update({f"pick/{key}": pick[key] for key in keys})
    summary = {"trials": len(rows), **{f"trials/{k}": n for k, n in counts.items()}, **chosen}
    run.finish("completed", summary=summary)
    if run.error and run.error not in WANDB_TOLD:
        echo(f"W&B: {run.error}; the summary and plots are in {folder}")


def write_provenance(
    folder: Path,
    space: SearchSpace,
    options: SweepOptions,
    space_file: str | None = None,
    started: str | None = None,
) -> None:
    """``sweep.json``: when the sweep started (``started``, ISO; default now), the space file (``space_file``,
    else the space's source), the resolved space and the options the sweep started with."""
    import datetime

    record = {
        "started": started or datetime.datetime.now().isoformat(timespec="seconds"),
        "space_file": space_file or str(Path(space.source.split(" + ")[0]).resolve()),
        "space": space.to_dict(),
        "options": recorded(options),
    }
    (folder / SWEEP_RECORD).write_text(json.dumps(record, indent=1, default=str))


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _unfinished(trial: Any) -> bool:
    return trial is not None and trial.status not in ("TERMINATED", "ERROR")


def summary_rows(
    grid: Any,
    space: SearchSpace,
    study: Any = None,
    ended: set[str] | None = None,
    tries: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per trial, in the order the search proposed them (the Optuna trial ``number``): searched
    config, best / last accuracy, status and reason, epochs, mask figures, and ``tried``: the ``--try`` file
    it ran (``tries``, in the order they were given), else None. ``ended``: the ids of the trials that ended
    (:data:`ended_trials`); the others are ``interrupted``. None: Tune's loop took no step, so no trial was
    stopped and Tune's own statuses hold (those not TERMINATED or ERROR are ``interrupted``)."""
    from tune_attn.tune.searcher import RAY_TRIAL_ID

    numbers = {t.user_attrs.get(RAY_TRIAL_ID): t.number for t in (study.trials if study else [])}
    # Optuna asks for the trials enqueued (--try) first, in their order: the k-th of them ran tries[k]
    enqueued = sorted(t.number for t in (study.trials if study else []) if "fixed_params" in t.system_attrs)
    tried = dict(zip(enqueued, tries, strict=False))
    # Tune's own trials, in the grid's order: the id of a trial that never reported (waiting when interrupted)
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = list(getattr(analysis, "trials", None) or [])
    rows = []
    for i, result in enumerate(grid):
        last = result.metrics or {}
        hist = result.metrics_dataframe
        accs = list(hist[METRIC]) if hist is not None and METRIC in hist else []
        status, reason = run_status(last, result.error is not None, METRIC)
        trial = trials[i] if i < len(trials) else None
        # The Trial's own id: a trial that has not reported yet gets, as its metrics, the ones its actor fills in,
        # and a reused actor fills in the id of the trial it ran before (seen after a Ctrl+C at a trial's start).
        trial_id = trial.trial_id if trial is not None else last.get("trial_id", "")
        cut_short = _unfinished(trial) if ended is None else trial_id not in ended  # by a Ctrl+C / SIGTERM
        if result.error is not None:
            reason = error_reason(result.error)
        elif cut_short:
            status, reason = INTERRUPTED, interrupted_reason(last)
        row: dict[str, Any] = {"trial_id": trial_id, "number": numbers.get(trial_id), "status": status}
        row["reason"] = reason
        row.update({k: result.config.get(k) for k in space.searched_keys()})
        row["best_val_accuracy"] = max(accs) if accs else None
        row["last_val_accuracy"] = last.get(METRIC)
        row["epochs"] = last.get("epoch")
        row["device"] = last.get("device")
        row.update({k: last.get(k) for k in SUMMARY_FIGURES})
        row["tried"] = tried.get(row["number"])
        row["path"] = result.path
        rows.append(row)
    return sorted(rows, key=lambda r: (r["number"] is None, r["number"] or 0))
