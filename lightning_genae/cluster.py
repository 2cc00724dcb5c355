"""How a process lives in a cluster job: which job and rank it is, how it waits for rank 0, how it stops.

Every process of a SLURM job (one `srun` task per device) or of a torchrun job starts at once and knows
only its environment. The run folder, the W&B run id and the decision to resume a requeued job are all
derived from that environment (`current_job`), so every rank and every restart of a job agree on them
without talking to each other. A signal (Ctrl-C, SIGTERM, SLURM's warning signal before the time limit)
ends training at an iteration boundary that every rank agrees on, with `last.ckpt` saved
(`StopOnSignal`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from lightning_genae.errors import GenaeError


@dataclass(frozen=True)
class ClusterJob:
    """A job whose processes a scheduler started: SLURM (`srun`) or torchrun."""

    scheduler: str
    # SLURM: the job id, `<array job>_<task>` for an array task; torchrun: its rendezvous run id.
    job_id: str
    # How often the scheduler started this job again (a requeue, a node failure, an elastic restart).
    restart_count: int

    @property
    def tag(self) -> str:
        """Folder- and id-safe name of the job, the same in every rank and every restart: `slurm1234_5`."""
        safe = "".join(char if char.isalnum() or char in "_-" else "-" for char in self.job_id)
        return f"{self.scheduler}{safe}"


def is_slurm_task() -> bool:
    """Started by SLURM as a job's task: Lightning's own test (`SLURMEnvironment.detect`), without the
    warning it prints on every machine where `srun` exists."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def current_job() -> ClusterJob | None:
    """The SLURM or torchrun job this process belongs to, or None (a plain process, Lightning's launcher).

    SLURM counts only when Lightning would run as a SLURM job (`is_slurm_task`): an interactive
    `salloc` shell (job name bash or interactive) is not a job whose runs should share a folder.
    """
    if is_slurm_task():
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        if array_job is not None:
            job_id = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
        else:
            job_id = os.environ.get("SLURM_JOB_ID", "0")
        return ClusterJob("slurm", job_id, _count(os.environ.get("SLURM_RESTART_COUNT")))
    if TorchElasticEnvironment.detect() and os.environ.get("TORCHELASTIC_RUN_ID"):
        return ClusterJob(
            "torchrun",
            os.environ["TORCHELASTIC_RUN_ID"],
            _count(os.environ.get("TORCHELASTIC_RESTART_COUNT")),
        )
    return None


def _count(value: str | None) -> int:
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        return 0


def cluster_plugins() -> list[ClusterEnvironment]:
    """The Trainer's cluster environment: under SLURM, Lightning's without its auto-requeue, whose
    handlers save from inside a signal handler; `StopOnSignal` stops, saves and requeues instead."""
    return [SLURMEnvironment(auto_requeue=False)] if is_slurm_task() else []


def local_rank() -> int:
    """This process's index on its node before any process group exists (0 for a plain process)."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if name == "SLURM_LOCALID" and not is_slurm_task():
            continue
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def global_rank() -> int:
    """This process's rank in the whole job before any process group exists (0 for a plain process)."""
    value = os.environ.get("RANK")
    if value is None and is_slurm_task():
        value = os.environ.get("SLURM_PROCID")
    if value is not None and value.isdigit():
        return int(value)
    # Lightning's own launcher gives its children LOCAL_RANK and NODE_RANK only; on a node other than the
    # first the exact rank is unknown here, and only whether it is 0 matters.
    node = os.environ.get("NODE_RANK", "0")
    return local_rank() if node in ("", "0") else 1 + local_rank()


# Lightning's launcher starts the other ranks of `--devices N` as child processes running the same command;
# the parent hands them the time stamp of its default run folder, which they could not compute themselves.
STAMP_VARIABLE = "GENAE_RUN_STAMP"


def run_stamp() -> str:
    """What tells a run's default folder apart: the job under SLURM or torchrun (the same on every rank and
    after every requeue, so a restarted job finds its run), else the time the first rank started."""
    job = current_job()
    if job is not None:
        return job.tag
    parent, _, stamp = os.environ.get(STAMP_VARIABLE, "").partition(":")
    # Only a child of the process that published it: a second run in that process gets its own time.
    if stamp and parent == str(os.getppid()):
        return stamp
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    os.environ[STAMP_VARIABLE] = f"{os.getpid()}:{stamp}"
    return stamp


# ----- one rank creates, the others wait -----


class RankZeroFailed(GenaeError):
    """Local rank 0 could not create what the other ranks were waiting for; they stop with its reason."""

    exit_code = 1


FileIdentity = tuple[int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """Which file is at `path` (inode, modification time), or None: an atomic replacement changes it."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


def created_by_local_rank_zero(
    path: Path,
    create: Callable[[], None],
    what: str,
    *,
    replacing: FileIdentity | None = None,
    poll_s: float = 1.0,
) -> None:
    """`create()` writes `path` on local rank 0 while the node's other ranks wait for the file, then go on.

    Call it where `path` is missing, or unusable (stale, damaged): then pass `replacing`, the
    `file_identity` of that file taken before it was judged, and the waiting ranks wait for a different
    file. Under SLURM or torchrun all ranks start at once; without this each would train the same
    augmenter or classifier, a world-size-fold waste. Per node rather than per job, so a cache on
    node-local disk works too. `create` must write `path` atomically (a waiting rank loads it as soon as
    it appears). If rank 0 fails, it leaves a marker named after this job and restart, so the waiting ranks
    stop with its reason instead of waiting for ever (a marker of another job or restart is never read).
    Outside a SLURM/torchrun job (one process, or Lightning's launcher, which starts the other ranks only
    after this) the process simply creates the file.
    """
    job = current_job()
    failure = path.with_name(f".{path.name}.failed-{job.tag}-{job.restart_count}") if job else None
    if failure is None or local_rank() == 0:
        try:
            create()
        except BaseException as error:
            if failure is not None:
                failure.parent.mkdir(parents=True, exist_ok=True)
                failure.write_text(f"{type(error).__name__}: {error}")
            raise
        return
    print(
        f"rank {global_rank()}: waiting for local rank 0 to create the {what} ({path})",
        file=sys.stderr,
        flush=True,
    )
    while file_identity(path) in (None, replacing):
        if failure.is_file():
            raise RankZeroFailed(
                f"local rank 0 failed to create the {what} ({failure.read_text().strip()}); "
                "see its error above"
            )
        time.sleep(poll_s)


# ----- stopping on a signal -----


class RunInterrupted(BaseException):
    """A signal ended the run on purpose: one line for the user and an exit code of 128 + signal number.

    A BaseException like KeyboardInterrupt, not an error of the run: an ablation grid must stop too, not
    record the cell as failed and go on to the next one.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopOnSignal(Callback):
    """SIGINT, SIGTERM and SIGUSR1 end training at the next iteration boundary with `last.ckpt` saved.

    Lightning's own handling does not fit a run that must resume exactly: Ctrl-C raises KeyboardInterrupt
    wherever the process is (possibly between two optimizer updates of one iteration) and saves nothing;
    its SIGTERM and SLURM requeue handlers call collectives and save a checkpoint from inside the signal
    handler, where each rank may be at a different point of a DDP step (a mismatched collective hangs).
    So the handlers here only note the signal; after each iteration the ranks agree on whether any of
    them got one (one small all-reduce, only when there are several processes), then all save the same
    checkpoint and stop together. SIGUSR1 is what `#SBATCH --signal=USR1@90` sends before the time limit:
    after saving, rank 0 requeues the SLURM job, which then continues from the checkpoint. A second
    Ctrl-C exits at once, without saving.
    """

    def __init__(self, checkpoint_path: Path, run_dir: Path) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.run_dir = Path(run_dir)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning's signal connector registered its handlers (it restores the originals at teardown).
        self._trainer = trainer
        self.received = None
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            print(
                f"second Ctrl-C: stopped at once, without saving; {self.checkpoint_path} holds the last "
                "periodic checkpoint",
                file=sys.stderr,
                flush=True,
            )
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if isinstance(launcher, _SubprocessScriptLauncher):
                launcher.kill(signal.SIGKILL)
            os._exit(128 + signal.SIGINT)
        if self.received is None:
            self.received = signum
            if signum == signal.SIGINT and global_rank() == 0:
                print(
                    "Ctrl-C: stopping after this iteration and saving last.ckpt (Ctrl-C again stops at once)",
                    file=sys.stderr,
                    flush=True,
                )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            # Every rank takes part each iteration, so all of them stop after the same one.
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = self.received if self.received is not None else signal.SIGTERM
        trainer.save_checkpoint(self.checkpoint_path)
        iteration = getattr(pl_module, "iteration", trainer.global_step)
        name = signal.Signals(signum).name
        message = f"stopped by {name} after iteration {iteration}; saved {self.checkpoint_path}"
        job = current_job()
        if signum == signal.SIGUSR1 and job is not None and job.scheduler == "slurm":
            message += "; " + (requeue_slurm_job(job) if trainer.is_global_zero else "")
        else:
            message += f"; continue with: python run.py --output {self.run_dir} --resume last"
        self._restore()
        raise RunInterrupted(message if trainer.is_global_zero else "", 128 + signum)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}


def requeue_slurm_job(job: ClusterJob) -> str:
    """Ask SLURM to requeue the job (it restarts with the same job id, so the same run folder); says what
    happened, in words for the stop message."""
    try:
        result = subprocess.run(
            ["scontrol", "requeue", job.job_id], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"requeueing failed ({type(error).__name__}: {error}); resubmit the job to continue"
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        why = reason[0] if reason else f"exit code {result.returncode}"
        return f"`scontrol requeue {job.job_id}` failed ({why}); resubmit the job to continue"
    return f"requeued SLURM job {job.job_id}, which continues from there"
