"""How a process lives in a cluster job: which job and rank it is (from the environment, so every rank and
restart agree without talking), how it waits for rank 0, how it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_genae.errors import GenaeError

if TYPE_CHECKING:
    from torch.distributed import Store


@dataclass(frozen=True)
class ClusterJob:
    """A job whose processes a scheduler started: SLURM (`srun`) or torchrun."""

    scheduler: str
    # SLURM: the job id, `<array job>_<task>` for an array task; torchrun: its rendezvous run id.
    job_id: str
    # How often the scheduler started this job again (a requeue, a node failure, an elastic restart).
    restart_count: int

    @property
    def identified(self) -> bool:
        """Whether the id tells this job from others (torchrun without `--rdzv-id` says `none`)."""
        return not (self.scheduler == "torchrun" and self.job_id in ("", "none"))

    @property
    def tag(self) -> str:
        """Folder- and id-safe name of the job, the same in every rank and every restart: `slurm1234_5`."""
        safe = "".join(char if char.isalnum() or char in "_-" else "-" for char in self.job_id)
        return f"{self.scheduler}{safe}"


def is_slurm_task() -> bool:
    """Started by SLURM as a job's task: `SLURMEnvironment.detect` without its warning."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def current_job() -> ClusterJob | None:
    """The SLURM (as Lightning detects it) or torchrun job this process belongs to, or None."""
    if is_slurm_task():
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        if array_job is not None:
            job_id = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
        else:
            job_id = os.environ.get("SLURM_JOB_ID", "0")
        return ClusterJob("slurm", job_id, _count(os.environ.get("SLURM_RESTART_COUNT")))
    if not os.environ.get("TORCHELASTIC_RUN_ID"):
        return None
    from lightning_fabric.plugins.environments import TorchElasticEnvironment

    if not TorchElasticEnvironment.detect():
        return None
    restarts = _count(os.environ.get("TORCHELASTIC_RESTART_COUNT"))
    return ClusterJob("torchrun", os.environ["TORCHELASTIC_RUN_ID"], restarts)


def _count(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def _variable(name: str, slurm_name: str) -> int | None:
    """The whole number in `$name`, else under SLURM in `$slurm_name`, or None."""
    value = os.environ.get(name)
    if value is None and is_slurm_task():
        value = os.environ.get(slurm_name)
    return int(value) if value is not None and value.isdigit() else None


def local_rank() -> int:
    """This process's index on its node before any process group exists (0 for a plain process)."""
    return _variable("LOCAL_RANK", "SLURM_LOCALID") or 0


def global_rank() -> int:
    """This process's rank in the whole job before any process group exists (0 for a plain process)."""
    rank = _variable("RANK", "SLURM_PROCID")
    if rank is not None:
        return rank
    # Lightning's launcher gives its children LOCAL_RANK and NODE_RANK only: off the first node, only "not 0".
    node = os.environ.get("NODE_RANK", "0")
    return local_rank() if node in ("", "0") else 1 + local_rank()


# How Lightning's launcher's parent hands its children the time stamp of its default run folder.
STAMP_VARIABLE = "GENAE_RUN_STAMP"


def run_stamp() -> str:
    """What tells a run's default folder apart: the job under SLURM or torchrun (so a requeued job finds its
    run), else the time the first rank started."""
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
    """`create()` writes `path` atomically on local rank 0 of a job while the node's other ranks wait for a
    file other than `replacing`; if rank 0 fails, a marker file stops the others with its reason."""
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
    gate = _gate[0] if _gate else None
    while file_identity(path) in (None, replacing):
        if gate is not None and gate.store.check([gate.key]):
            # Rank 0 has given its word; if it refused the start (perhaps before it got here), no file will
            # come and `wait` stops this rank too.
            gate.wait()
        if failure.is_file():
            raise RankZeroFailed(
                f"local rank 0 failed to create the {what} ({failure.read_text().strip()}); see above"
            )
        time.sleep(poll_s)


class RankZeroStopped(GenaeError):
    """Rank 0 could not start the run; this rank stops too, saying only where the reason is printed."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"rank {global_rank()}: stopped, rank 0 could not start the run (see its output)")
        self.exit_code = exit_code


# `StartGate.verdict` of a rank 0 that went away without a word (its store with it).
RANK_ZERO_GONE = -1
# How long a rank waits for rank 0 to reach training: Lightning's default process-group timeout.
_VERDICT_TIMEOUT = timedelta(minutes=30)
# How long a refusing rank 0 keeps its store up at most for the others to read why (ranks can start seconds
# apart; one that connects after the store is gone waits the whole timeout).
_REFUSAL_GRACE_S = 60.0


@dataclass
class StartGate:
    """Rank 0's word to the job's other ranks through a TCP store: the run starts (`open`) or it does not
    (`refuse`), so that a refused start does not leave them waiting at the rendezvous until its timeout."""

    store: Store
    job_key: str
    world_size: int
    opened: bool = False
    # Runs this process has started: a grid runs its cells one after another, each with its own word.
    runs: int = 0

    @property
    def key(self) -> str:
        return f"{self.job_key}/{self.runs}"

    def next_run(self) -> None:
        """A new run starts (every rank starts the same runs in the same order): rank 0's word is to come."""
        self.runs += 1
        self.opened = False

    def open(self) -> None:
        """Rank 0: the run starts; the others go on to training."""
        self.store.set(self.key, "ok")
        self.opened = True

    def refuse(self, error: BaseException) -> None:
        """Rank 0: the run does not start (unless already opened); waits a little for the others to read its
        exit code, which they exit with."""
        if self.opened:
            return
        self.store.set(
            self.key, str(getattr(error, "exit_code", 130 if isinstance(error, KeyboardInterrupt) else 1))
        )
        deadline = time.monotonic() + _REFUSAL_GRACE_S
        while self.store.add(f"{self.key}/read", 0) < self.world_size - 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait(self) -> None:
        """Another rank: wait until rank 0 opens the run; `RankZeroStopped` if it refuses or goes away."""
        verdict = self.verdict()
        if verdict != 0:
            raise RankZeroStopped(1 if verdict == RANK_ZERO_GONE else verdict)
        self.opened = True

    def verdict(self) -> int:
        """Another rank: rank 0's word, waited for: 0 when the run starts, else the exit code rank 0 stops
        with (read, which lets a refusing rank 0 leave), or RANK_ZERO_GONE when it went without a word."""
        try:
            self.store.wait([self.key])
            verdict = self.store.get(self.key).decode()
        except Exception:  # the store went away with rank 0 (torch raises its own store errors)
            return RANK_ZERO_GONE
        if verdict == "ok":
            return 0
        self.store.add(f"{self.key}/read", 1)
        return int(verdict) if verdict.isdigit() else 1


# The gate of this process's job, once made: a process belongs to one job all its life.
_gate: list[StartGate] = []


def start_gate() -> StartGate | None:
    """This job's gate where a scheduler started several ranks at once (SLURM, torchrun), else None."""
    if _gate:
        return _gate[0]
    job = current_job()
    world_size = _variable("WORLD_SIZE", "SLURM_NTASKS") or 1
    if job is None or world_size < 2:
        return None
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
    from torch.distributed import TCPStore

    # Where the process group will meet: the address Lightning's cluster environment gives it.
    environment = SLURMEnvironment() if job.scheduler == "slurm" else TorchElasticEnvironment()
    host = global_rank() == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    store = TCPStore(
        environment.main_address,
        environment.main_port,
        world_size,
        is_master=host,
        timeout=_VERDICT_TIMEOUT,
        wait_for_workers=False,
        multi_tenant=True,
    )
    _gate.append(StartGate(store, f"genae/start/{job.tag}/{job.restart_count}", world_size))
    return _gate[0]


# The stop signal a run in this process noted last, so that a grid stops after a cell that finished anyway.
_noted_signal: int | None = None


def note_stop_signal(signum: int) -> None:
    """Record that a run received the stop signal `signum` (StopOnSignal calls it)."""
    global _noted_signal
    _noted_signal = signum


def take_noted_signal() -> int | None:
    """The stop signal a run noted since the last call (None if none), forgotten once read."""
    global _noted_signal
    noted, _noted_signal = _noted_signal, None
    return noted


class RunInterrupted(BaseException):
    """A signal ended the run on purpose: one line and exit 128 + signal number. A BaseException, so that a
    grid stops too rather than record a failed cell."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def requeue_slurm_job(job: ClusterJob) -> str | None:
    """Ask SLURM to requeue the job (same job id, same run folder); None when it did, else why not."""
    try:
        result = subprocess.run(
            ["scontrol", "requeue", job.job_id], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        why = f"{type(error).__name__}: {error}"
        return f"requeueing SLURM job {job.job_id} failed ({why}); resubmit the job to continue"
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        why = reason[0] if reason else f"exit code {result.returncode}"
        return f"`scontrol requeue {job.job_id}` failed ({why}); resubmit the job to continue"
    return None


def interrupted_by(signum: int, message: str, advice: str) -> RunInterrupted:
    """How a stop signal ends a run or a grid: `message` and `advice` on rank 0, exit 128 + the signal. Under
    SLURM's USR1 the job is requeued instead, said first (requeueing may end this step)."""
    job = current_job()
    if signum == signal.SIGUSR1 and job is not None and job.scheduler == "slurm":
        if global_rank() != 0:
            return RunInterrupted("", 128 + signum)
        print(f"{message}; requeueing SLURM job {job.job_id}", file=sys.stderr, flush=True)
        return RunInterrupted(requeue_slurm_job(job) or "", 128 + signum)
    return RunInterrupted(f"{message}; {advice}" if global_rank() == 0 else "", 128 + signum)
