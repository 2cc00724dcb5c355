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
        """Whether the id tells this job from others: torchrun without `--rdzv-id` gives every job the id
        `none`, so its folders and checkpoints cannot be told from another such job's."""
        return not (self.scheduler == "torchrun" and self.job_id in ("", "none"))

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
    # The gate of a run (train.run makes it first); none where this is called outside one.
    gate = _gate[0] if _gate else None
    while file_identity(path) in (None, replacing):
        if gate is not None:
            # Rank 0 may have stopped before it got here (a refused run folder): no file will come.
            gate.raise_if_refused()
        if failure.is_file():
            raise RankZeroFailed(
                f"local rank 0 failed to create the {what} ({failure.read_text().strip()}); "
                "see its error above"
            )
        time.sleep(poll_s)


# ----- rank 0's start-up verdict -----


class RankZeroStopped(GenaeError):
    """Rank 0 could not start the run (its run folder was refused, its start failed); this rank stops too.

    Rank 0 prints the reason; this rank's line only says where to look, so the job log holds one copy.
    """

    def __init__(self, exit_code: int) -> None:
        super().__init__(
            f"rank {global_rank()}: stopped, rank 0 could not start the run (its error is in its output)"
        )
        self.exit_code = exit_code


# `StartGate.verdict` of a rank 0 that went away without a word (its store with it).
RANK_ZERO_GONE = -1
# How long a rank waits for rank 0 to reach training: Lightning's default process-group timeout, which a
# rank waiting at the rendezvous would have waited anyway.
_VERDICT_TIMEOUT = timedelta(minutes=30)
# How long a refusing rank 0 stays up at most (its store with it) for the others to read why; it leaves as
# soon as all have. Generous, because a rank that has not yet connected when the store goes would wait the
# whole timeout: ranks of one job can start seconds apart (imports from a slow shared file system).
_REFUSAL_GRACE_S = 60.0


@dataclass
class StartGate:
    """Rank 0's word to the job's other ranks: the run starts (`open`) or it does not (`refuse`).

    Under SLURM or torchrun every rank runs run.py at once, but only rank 0 claims the run folder and
    writes it. Without a word from rank 0, a rank whose rank 0 refused waits at the process group's
    rendezvous (or for an augmenter rank 0 will never train) until the timeout, minutes later. The word
    goes through the TCP store that the process group is built on anyway (at MASTER_ADDR:MASTER_PORT,
    torchrun's agent store or, under SLURM, the one rank 0 starts early and `init_process_group` then
    shares), so it costs nothing after start-up and needs no shared file system.
    """

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
        """Rank 0: the run does not start (unless already opened); waits a little for the others to read it.

        Rank 0 exits with `error`; the others exit with its exit code.
        """
        if self.opened:
            return
        self.store.set(
            self.key, str(getattr(error, "exit_code", 130 if isinstance(error, KeyboardInterrupt) else 1))
        )
        deadline = time.monotonic() + _REFUSAL_GRACE_S
        while self.store.add(f"{self.key}/read", 0) < self.world_size - 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    def raise_if_refused(self) -> None:
        """Another rank: `RankZeroStopped` if rank 0 has refused; returns at once otherwise."""
        if self.store.check([self.key]):
            self.wait()

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
    """This job's gate, or None where rank 0 starts the other ranks itself or there are none.

    Only where a scheduler started every rank at once (SLURM, torchrun) with more than one in the world.
    Made once per process: under SLURM rank 0 hosts the store from its first call, and keeps it for
    `init_process_group`, which shares a server on the same port (`multi_tenant`).
    """
    if _gate:
        return _gate[0]
    job = current_job()
    world_size = _world_size()
    if job is None or world_size < 2:
        return None
    from torch.distributed import TCPStore

    address, port = _rendezvous_address(job)
    host = global_rank() == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    store = TCPStore(
        address,
        port,
        world_size,
        is_master=host,
        timeout=_VERDICT_TIMEOUT,
        wait_for_workers=False,
        multi_tenant=True,
    )
    _gate.append(StartGate(store, f"genae/start/{job.tag}/{job.restart_count}", world_size))
    return _gate[0]


def _world_size() -> int:
    value = os.environ.get("WORLD_SIZE")
    if value is None and is_slurm_task():
        value = os.environ.get("SLURM_NTASKS")
    return int(value) if value is not None and value.isdigit() else 1


def _rendezvous_address(job: ClusterJob) -> tuple[str, int]:
    """Where the process group will meet: the address Lightning's cluster environment gives it."""
    if job.scheduler == "slurm":
        from lightning_fabric.plugins.environments import SLURMEnvironment

        environment = SLURMEnvironment()
        return environment.main_address, environment.main_port
    return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])


# ----- stopping on a signal -----


# The stop signal a run in this process noted last: a run whose signal came in its last iteration finishes,
# and an ablation grid still stops after that cell (`take_noted_signal`).
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
    """A signal ended the run on purpose: one line for the user and an exit code of 128 + signal number.

    A BaseException like KeyboardInterrupt, not an error of the run: an ablation grid must stop too, not
    record the cell as failed and go on to the next one.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def requeue_slurm_job(job: ClusterJob) -> str | None:
    """Ask SLURM to requeue the job (it restarts with the same job id, so the same run folder); None when it
    did, else a line saying why not and what to do."""
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
    """How a stop signal ends a run or a grid: `message` (where it stopped) and `advice` (how to go on) on
    rank 0, exit 128 + the signal. Under SLURM's warning signal (USR1) the job is requeued instead of
    advising, which it says first: SLURM may end this job step as it requeues it, before a later line
    reaches the job's output file."""
    job = current_job()
    if signum == signal.SIGUSR1 and job is not None and job.scheduler == "slurm":
        if global_rank() != 0:
            return RunInterrupted("", 128 + signum)
        print(
            f"{message}; requeueing SLURM job {job.job_id}, which continues from there",
            file=sys.stderr,
            flush=True,
        )
        return RunInterrupted(requeue_slurm_job(job) or "", 128 + signum)
    return RunInterrupted(f"{message}; {advice}" if global_rank() == 0 else "", 128 + signum)
