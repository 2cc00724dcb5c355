"""How a process lives in a cluster job: which job and rank it is, how it waits for rank 0, how it stops.

Every process of a SLURM job (one `srun` task per device) or of a torchrun job starts at once and knows
only its environment. The run folder, the W&B run id and the decision to resume a requeued job are all
derived from that environment (`current_job`), so every rank and every restart of a job agree on them
without talking to each other. A signal ends training at an iteration boundary (`stopping.StopOnSignal`)
by raising `RunInterrupted`. Nothing here imports Lightning: the command line reads the job before any
training starts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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
    if os.environ.get("TORCHELASTIC_RUN_ID") and _torchelastic_detected():
        return ClusterJob(
            "torchrun",
            os.environ["TORCHELASTIC_RUN_ID"],
            _count(os.environ.get("TORCHELASTIC_RESTART_COUNT")),
        )
    return None


def _torchelastic_detected() -> bool:
    # Imported here, under torchrun only: the command line reads `current_job` without importing Lightning.
    from lightning_fabric.plugins.environments import TorchElasticEnvironment

    return TorchElasticEnvironment.detect()


def _count(value: str | None) -> int:
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        return 0


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
