"""Cluster jobs: which job and rank a process is, a run folder that survives a requeue, signals that save.

The end-to-end test at the bottom starts a real one-node SLURM cluster (slurmctld, slurmd, munged) on
this machine, submits scripts/slurm/train.sbatch with two tasks and requeues it mid-run.
"""

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from forked import Forked, run_forked
from tiny import TINY_RUN

from lightning_genae import cluster
from lightning_genae.cache import write_atomically
from lightning_genae.experiment import train
from lightning_genae.experiment.cli import checkpoint_of_restarted_job, main
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import resolve
from lightning_genae.experiment.train import default_run_dir
from lightning_genae.lightning_internals import wandb_init_arguments
from lightning_genae.run_files import FAILED_FILE

REPO = Path(__file__).resolve().parents[2]
JOB_VARIABLES = (
    "SLURM_NTASKS",
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "GROUP_RANK",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


@pytest.fixture(autouse=True)
def no_job(monkeypatch):
    """Each test starts outside any job, whatever machine (or SLURM job) runs the suite."""
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(cluster.STAMP_VARIABLE, raising=False)


def as_slurm_task(monkeypatch, job_id="4242", restart=None, array=None, procid=0):
    """The variables `srun` gives each task of a one-task-per-device job."""
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", job_id)
    monkeypatch.setenv("SLURM_JOB_NAME", "train.sbatch")
    monkeypatch.setenv("SLURM_PROCID", str(procid))
    monkeypatch.setenv("SLURM_LOCALID", str(procid))
    monkeypatch.setenv("SLURM_NODEID", "0")
    for name, value in {
        "SLURM_RESTART_COUNT": restart,
        "SLURM_ARRAY_JOB_ID": array and array[0],
        "SLURM_ARRAY_TASK_ID": array and array[1],
    }.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


# ----- which job, which rank -----


def test_a_plain_process_is_no_cluster_job_and_rank_zero():
    assert cluster.current_job() is None
    assert cluster.global_rank() == 0 and cluster.local_rank() == 0


def test_a_slurm_task_knows_its_job_array_task_restart_and_rank(monkeypatch):
    as_slurm_task(monkeypatch, job_id="4250", restart=2, array=("4242", "7"), procid=1)
    job = cluster.current_job()
    assert job == cluster.ClusterJob("slurm", "4242_7", 2)
    assert job.tag == "slurm4242_7"
    assert cluster.global_rank() == 1 and cluster.local_rank() == 1


def test_an_interactive_slurm_shell_is_not_a_job_whose_runs_share_a_folder(monkeypatch):
    as_slurm_task(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # salloc's shell, as Lightning treats it
    assert cluster.current_job() is None


def test_a_torchrun_worker_knows_its_run_id_restart_and_rank(monkeypatch):
    for name, value in {
        "TORCHELASTIC_RUN_ID": "exp/a b",
        "TORCHELASTIC_RESTART_COUNT": "1",
        "GROUP_RANK": "0",
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "localhost",
        "MASTER_PORT": "29500",
    }.items():
        monkeypatch.setenv(name, value)
    job = cluster.current_job()
    assert job == cluster.ClusterJob("torchrun", "exp/a b", 1)
    assert job.tag == "torchrunexp-a-b", "safe in a folder name"
    assert cluster.global_rank() == 3 and cluster.local_rank() == 1


# ----- the default run folder -----


def test_default_run_folder_of_a_slurm_job_is_its_job_and_array_task_on_every_restart(monkeypatch):
    config = RunConfig(model="ae", data="digits", augment="none", seed=3)
    as_slurm_task(monkeypatch, array=("4242", "7"))
    first = default_run_dir(config)
    as_slurm_task(monkeypatch, array=("4242", "7"), restart=1, procid=1)
    assert default_run_dir(config) == first == Path("runs/ae-digits-none-seed3-slurm4242_7")


def test_ranks_started_by_lightnings_launcher_get_the_folder_of_the_process_that_started_them(monkeypatch):
    stamp = cluster.run_stamp()
    # What a child started by this process inherits (Lightning's launcher copies os.environ).
    assert os.environ[cluster.STAMP_VARIABLE] == f"{os.getpid()}:{stamp}"
    # A stamp no clock gives now, so that only inheriting it can produce it.
    parent = os.getpid()
    monkeypatch.setenv(cluster.STAMP_VARIABLE, f"{parent}:19990101-000000")
    with monkeypatch.context() as child:
        child.setattr(os, "getppid", lambda: parent)
        child.setattr(os, "getpid", lambda: parent + 1)
        assert cluster.run_stamp() == "19990101-000000"
    # The process that published a stamp (not its child) gets a new one for its own next run.
    assert cluster.run_stamp() != "19990101-000000"


def test_a_requeued_slurm_job_continues_its_run_from_last_ckpt(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    as_slurm_task(monkeypatch, job_id="5151")
    command = ["--model", "ae", *TINY_RUN, "--max-steps", "3"]
    assert main(command) == 0
    run_dir = tmp_path / "runs" / "ae-digits-none-seed0-slurm5151"
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 3
    # The same command again in the restarted job (a longer budget, to see that it goes on): no --resume.
    as_slurm_task(monkeypatch, job_id="5151", restart=1)
    capsys.readouterr()
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "6"]) == 0
    out = capsys.readouterr().out
    last = Path("runs/ae-digits-none-seed0-slurm5151/checkpoints/last.ckpt")
    assert f"resuming from {last} at iteration 3" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 6
    assert [path.name for path in (tmp_path / "runs").iterdir()] == [run_dir.name]


def test_a_requeued_job_whose_command_resumes_an_older_checkpoint_goes_on_from_its_own_last_ckpt(
    tmp_path, monkeypatch, capsys
):
    """A restarted job runs its command again, `--resume checkpoints/older.ckpt` included: in its own folder
    that would go back to where the first attempt started, so the attempt's own last.ckpt is continued."""
    run_dir = tmp_path / "run"
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "3", "--output", str(run_dir)]) == 0
    older = run_dir / "checkpoints" / "older.ckpt"
    shutil.copyfile(run_dir / "checkpoints" / "last.ckpt", older)
    command = ["--resume", str(older), "--max-steps", "7"]
    as_slurm_task(monkeypatch, job_id="7171")
    assert main([*command[:-1], "5"]) == 0
    as_slurm_task(monkeypatch, job_id="7171", restart=1)
    capsys.readouterr()
    assert main(command) == 0
    assert "this job's earlier attempt went on to iteration 5" in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 7
    # Another job's command does not go back over this run either.
    as_slurm_task(monkeypatch, job_id="7272", restart=1)
    assert main([*command[:-1], "9"]) == 2
    assert "went on to iteration 7" in capsys.readouterr().err


def test_a_requeued_job_with_output_resumes_only_when_slurm_says_it_restarted(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    as_slurm_task(monkeypatch, job_id="6161")
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "3", "--output", str(run_dir)]) == 0
    as_slurm_task(monkeypatch, job_id="6161", restart=1)
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "6", "--output", str(run_dir)]) == 0
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6
    # Another job, restarted or not, does not take over the checkpoint of a folder it was merely pointed at.
    config = RunConfig(model="ae", data="digits", output=str(run_dir))
    for restart in (None, 1):
        as_slurm_task(monkeypatch, job_id="6262", restart=restart)
        job = cluster.current_job()
        assert checkpoint_of_restarted_job(job, config, lambda: resolve(config).config) is None


def test_a_requeued_overwrite_replaces_a_failed_run_of_other_options(tmp_path, monkeypatch):
    """A run that failed part-way (its last.ckpt beside failed.json, written outside any job) and was started
    with other options is the run a requeued --overwrite job replaces, not one it cannot tell is its own."""
    run_dir = tmp_path / "run"
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)]) == 0
    (run_dir / "summary.json").unlink()
    (run_dir / FAILED_FILE).write_text("{}")
    as_slurm_task(monkeypatch, job_id="8383", restart=1)
    config = RunConfig(model="ae", data="digits", seed=1, output=str(run_dir), overwrite=True)
    assert checkpoint_of_restarted_job(cluster.current_job(), config, lambda: resolve(config).config) is None


def test_a_requeued_overwrite_whose_first_attempt_stopped_before_training_replaces_the_run(
    tmp_path, monkeypatch, capsys
):
    """A job preempted while it set up its --overwrite put the run it replaces back; started again, the job
    replaces that run as its first attempt would have, rather than continuing it or refusing it as another
    run's."""
    run_dir = tmp_path / "run"
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)]) == 0
    replaced = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    command = ["--model", "ae", *TINY_RUN, "--max-steps", "3", "--seed", "1", "--output", str(run_dir)]
    as_slurm_task(monkeypatch, job_id="8181")

    def preempted(*args, **kwargs):
        raise cluster.RunInterrupted("stopped by SIGTERM before training", 128 + signal.SIGTERM)

    with monkeypatch.context() as patched:
        patched.setattr(train, "_fit", preempted)
        assert main([*command, "--overwrite"]) == 128 + signal.SIGTERM
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == replaced, "the replaced run put back"
    as_slurm_task(monkeypatch, job_id="8181", restart=1)
    capsys.readouterr()
    assert main([*command, "--overwrite"]) == 0
    assert "resuming from" not in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["config"]["seed"] == 1
    # Its own checkpoint is what a later restart of the job continues.
    as_slurm_task(monkeypatch, job_id="8181", restart=2)
    config = RunConfig(model="ae", data="digits", output=str(run_dir))
    found = checkpoint_of_restarted_job(cluster.current_job(), config, lambda: resolve(config).config)
    assert found is not None and found.contents["global_step"] == 3


def test_a_requeued_overwrite_job_continues_the_run_its_earlier_attempt_started(
    tmp_path, monkeypatch, capsys
):
    """Its command still says --overwrite; the replacing was done by the first attempt, whose checkpoint is
    the run to continue (refused before as --overwrite with a resume)."""
    run_dir = tmp_path / "run"
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)]) == 0
    command = ["--model", "ae", *TINY_RUN, "--seed", "1", "--output", str(run_dir), "--overwrite"]
    as_slurm_task(monkeypatch, job_id="8282")
    assert main([*command, "--max-steps", "3"]) == 0
    as_slurm_task(monkeypatch, job_id="8282", restart=1)
    capsys.readouterr()
    assert main([*command, "--max-steps", "5"]) == 0
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'} at iteration 3" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 5 and summary["config"]["seed"] == 1


def test_a_requeued_overwrite_job_refuses_a_checkpoint_that_names_no_job_and_changes_nothing(
    tmp_path, monkeypatch, capsys
):
    """Written outside any job, or by an older version: the job's own run or the run it replaces; neither
    continued nor replaced on a guess. Without --overwrite it is continued, as it always was."""
    from lightning_genae.run_files import CLUSTER_JOB_KEY

    run_dir = tmp_path / "run"
    command = ["--model", "ae", *TINY_RUN, "--output", str(run_dir)]
    as_slurm_task(monkeypatch, job_id="8383")
    assert main([*command, "--max-steps", "2"]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint.pop(CLUSTER_JOB_KEY)
    torch.save(checkpoint, last)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    as_slurm_task(monkeypatch, job_id="8383", restart=1)
    capsys.readouterr()
    assert main([*command, "--max-steps", "4", "--overwrite"]) == 2
    assert "cannot tell whether" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
    assert main([*command, "--max-steps", "4"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 4


def test_a_requeued_overwrite_replaces_a_checkpoint_that_names_no_job_at_another_learning_rate(
    tmp_path, monkeypatch, capsys
):
    """A run of another --lr is not this job's (its command would have written the same one): the
    --overwrite replaces it, as a grid cell's --overwrite does, rather than refusing or continuing it."""
    from lightning_genae.run_files import CLUSTER_JOB_KEY

    run_dir = tmp_path / "run"
    command = ["--model", "ae", *TINY_RUN, "--output", str(run_dir), "--max-steps", "2"]
    assert main([*command, "--lr", "0.001"]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint.pop(CLUSTER_JOB_KEY, None)
    torch.save(checkpoint, last)
    as_slurm_task(monkeypatch, job_id="8484", restart=1)
    capsys.readouterr()
    assert main([*command, "--lr", "0.002", "--overwrite"]) == 0
    assert "resuming from" not in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["config"]["lr"] == 0.002


def strip_the_job(run_dir):
    """The run's last.ckpt as written outside any job (or by an older version): it names no job."""
    from lightning_genae.run_files import CLUSTER_JOB_KEY

    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint.pop(CLUSTER_JOB_KEY, None)
    torch.save(checkpoint, last)


def test_a_requeued_overwrite_compares_the_run_with_its_command_as_a_new_run_would_record_it(
    tmp_path, monkeypatch, capsys
):
    """Defaults the command leaves out (a budget, a learning rate) are the run's own: the same command is
    the job's own run, refused; an --lr typed before and not now is another run's, replaced."""
    as_slurm_task(monkeypatch, job_id="8585")
    same = tmp_path / "same"
    command = ["--model", "ae", *TINY_RUN, "--output", str(same), "--lr-schedule", "cosine"]
    assert main([*command, "--max-steps", "2"]) == 0
    # As the command without --max-steps records it once run to its end (its family's default budget).
    summary = json.loads((same / "summary.json").read_text())
    summary["config"]["max_steps"] = resolve(RunConfig(model="ae", data="digits")).config.max_steps
    (same / "summary.json").write_text(json.dumps(summary))
    strip_the_job(same)
    as_slurm_task(monkeypatch, job_id="8585", restart=1)
    capsys.readouterr()
    assert main([*command, "--overwrite"]) == 2
    assert "cannot tell whether" in capsys.readouterr().err
    other = tmp_path / "other"
    command = ["--model", "gan", *TINY_RUN, "--output", str(other), "--max-steps", "2"]
    assert main([*command, "--lr", "0.001"]) == 0
    strip_the_job(other)
    assert main([*command, "--overwrite"]) == 0
    assert json.loads((other / "summary.json").read_text())["config"]["lr"] == 0.0005


def test_a_requeued_grid_array_task_with_overwrite_continues_its_own_cell(tmp_path, monkeypatch, capsys):
    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--seeds", "0,1", "--output", str(root), "--overwrite"]
    grid += ["--grid-index"]
    as_slurm_task(monkeypatch, job_id="9001", array=("9000", "0"))
    assert main([*grid, "0", "--max-steps", "2"]) == 0
    as_slurm_task(monkeypatch, job_id="9001", array=("9000", "0"), restart=1)
    capsys.readouterr()
    assert main([*grid, "0", "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "starting over" not in out and "at iteration 2" in out
    assert json.loads((root / "none-tsfull-seed0" / "summary.json").read_text())["global_step"] == 4


def test_torchrun_jobs_without_a_rendezvous_id_never_continue_each_others_runs(tmp_path, monkeypatch, capsys):
    """torchrun without --rdzv-id gives every job the id `none`: a new job does not take the folder named
    after it for its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    for name in ("GROUP_RANK", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29563")
    assert not cluster.current_job().identified
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "2"]) == 0
    capsys.readouterr()
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "4"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    # Nor does an elastic restart take it for its own: the id cannot tell the jobs apart.
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    run_dir = next((tmp_path / "runs").iterdir())
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "4"]) == 2
    assert "torchrun --rdzv-id" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


def test_a_requeued_job_killed_before_its_first_checkpoint_starts_again_in_its_folder(
    tmp_path, monkeypatch, capsys
):
    """SLURM's SIGKILL after a preemption's grace period can come before the first checkpoint (loading the
    data, a classifier trained on first use): the attempt leaves its config.yaml and lock, nothing to resume.
    The requeued job, running the same command, starts again there; nothing else is let in."""
    run_dir = tmp_path / "run"
    # No periodic checkpoint, and 20 iterations: the kill below comes before the first checkpoint.
    command = [
        "--model",
        "ae",
        *TINY_RUN,
        "--max-steps",
        "20",
        "--ckpt-every",
        "100000",
        "--output",
        str(run_dir),
    ]
    job = {"SLURM_JOB_ID": "7171", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train.sbatch", "SLURM_PROCID": "0"}
    job.update(SLURM_LOCALID="0", SLURM_NODEID="0")
    killed = Forked(REPO / "run.py", command, env={**os.environ, "OMP_NUM_THREADS": "1", **job})
    deadline = time.time() + 300
    while not (run_dir / "config.yaml").is_file():
        assert killed.poll() is None and time.time() < deadline, "the run never wrote its config.yaml"
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert not list(run_dir.glob("checkpoints/*.ckpt"))
    left = {path.name for path in run_dir.iterdir()}
    # Refused, changing nothing: another job; another command of the same allocation (the job id, no
    # requeue); and the requeued job with another command than the folder's config.yaml records.
    for job, restart, model in (("9999", 1, "ae"), ("7171", None, "ae"), ("7171", 1, "vae")):
        as_slurm_task(monkeypatch, job_id=job, restart=restart)
        assert main(["--model", model, *command[2:]]) == 2
        # config.yaml, and metrics.csv where the kill came after the first rows were written.
        assert "already holds a started run (config.yaml" in capsys.readouterr().err
        assert {path.name for path in run_dir.iterdir()} == left
    as_slurm_task(monkeypatch, job_id="7171", restart=1)
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "this SLURM job's earlier attempt stopped before its first checkpoint; starting again" in out
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 20


# ----- signals -----


def start_long_run(run_dir: Path) -> Forked:
    """An ae run far longer than the test, checkpointing every 5 iterations; returns once it has trained."""
    command = ["--model", "ae", *TINY_RUN]
    command += ["--max-steps", "100000", "--eval-every", "100000", "--image-every", "100000"]
    command += ["--ckpt-every", "5", "--output", str(run_dir)]
    process = Forked(REPO / "run.py", command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert process.poll() is None and time.time() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.2)
    return process


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_last_ckpt_at_an_iteration_and_exits_with_one_line(tmp_path, signum):
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir)
    process.send_signal(signum)
    process.wait(timeout=120)
    err = process.stderr
    assert process.returncode == 128 + signum
    lines = err.strip().splitlines()
    name = signal.Signals(signum).name
    # Ctrl-C first says what will happen; then the one line of the outcome (nothing else on stderr).
    expected = 2 if signum == signal.SIGINT else 1
    assert len(lines) == expected, err
    outcome = lines[-1]
    assert outcome.startswith(f"stopped by {name} after iteration ") and "--resume last" in outcome
    iteration = int(outcome.split("after iteration ")[1].split(";")[0])
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == iteration, (
        "saved at the iteration it names, not the last periodic one"
    )
    if signum == signal.SIGTERM:  # it continues from there (once: resuming is the same after either)
        resume = ["--output", str(run_dir), "--resume", "last", "--max-steps", str(iteration + 2)]
        assert main(["--model", "ae", *TINY_RUN, *resume]) == 0
        assert json.loads((run_dir / "summary.json").read_text())["global_step"] == iteration + 2


@pytest.mark.slow
@pytest.mark.parametrize("saved_before", [False, True])
def test_a_second_ctrl_c_exits_at_once_without_saving(tmp_path, saved_before):
    """The handler itself, on a real signal: a run cannot be caught mid-iteration reliably enough to test."""
    if saved_before:
        (tmp_path / "last.ckpt").write_bytes(b"a periodic checkpoint")
    script = f"""
import os, signal, time
from types import SimpleNamespace
from lightning_genae.callbacks.stopping import StopOnSignal
callback = StopOnSignal({str(tmp_path / "last.ckpt")!r}, "run it again")
callback.on_train_start(SimpleNamespace(strategy=SimpleNamespace(launcher=None)), None)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.5)
print("still running after the first Ctrl-C", flush=True)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(5)
print("not reached")
"""
    result = run_forked(script, [])
    assert result.returncode == 130
    assert result.stdout.strip() == "still running after the first Ctrl-C"
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Ctrl-C: stopping after this iteration and saving last.ckpt")
    assert lines[-1].startswith("second Ctrl-C: stopped at once, without saving")
    assert ("holds the last periodic checkpoint" in lines[-1]) == saved_before
    assert ("no checkpoint was saved yet" in lines[-1]) == (not saved_before)
    if saved_before:
        assert (tmp_path / "last.ckpt").read_bytes() == b"a periodic checkpoint"
    else:
        assert not (tmp_path / "last.ckpt").exists()


# ----- a real one-node SLURM cluster -----

SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cannot_run_slurm(reason: str) -> None:
    """Skip with the reason; fail instead where CI installed SLURM and so promised that it runs."""
    if os.environ.get("GENAE_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd on localhost with a configuration of their own (no cgroups, free
    ports, state in a temporary folder); yields the environment that talks to it, stops them after."""
    missing = [program for program in SLURM_PROGRAMS if shutil.which(program) is None]
    if missing:
        cannot_run_slurm(
            f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        cannot_run_slurm("slurmd must run as root to start jobs as the submitting user; run as root")
    root = tmp_path_factory.mktemp("slurm")
    for folder in ("state", "spool", "log"):
        (root / folder).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    config = root / "slurm.conf"
    config.write_text(
        "\n".join(
            [
                "ClusterName=genaetest",
                f"SlurmctldHost={node}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                f"AuthInfo=socket={root}/munge.sock",
                "CredType=cred/munge",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/log/slurmctld.log",
                f"SlurmdLogFile={root}/log/slurmd.log",
                # No cgroups (a container has none to give): processes are tracked through /proc.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/builtin",
                "ReturnToService=2",
                "MpiDefault=none",
                "SwitchType=switch/none",
                f"NodeName={node} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "SLURM_CONF": str(config)}
    started = []

    def start(command: list[str]) -> None:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            cannot_run_slurm(
                f"`{command[0]}` did not start: {(result.stderr or result.stdout).strip()[-300:]}"
            )

    try:
        start(
            [
                "munged",
                "--force",
                f"--socket={root}/munge.sock",
                f"--key-file={key}",
                f"--pid-file={root}/munged.pid",
                f"--log-file={root}/log/munged.log",
                f"--seed-file={root}/munge.seed",
            ]
        )
        started.append(root / "munged.pid")
        start(["slurmctld", "-f", str(config)])
        started.append(root / "slurmctld.pid")
        start(["slurmd", "-f", str(config)])
        started.append(root / "slurmd.pid")
        deadline = time.time() + 60
        state = ""
        while time.time() < deadline:
            info = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = info.stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            logs = (
                (root / "log" / "slurmd.log").read_text()[-300:]
                if (root / "log" / "slurmd.log").exists()
                else ""
            )
            cannot_run_slurm(f"the SLURM node did not become idle within 60 s (state {state!r}): {logs}")
        yield env
    finally:
        for pid_file in reversed(started):
            if pid_file.is_file():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
                except (ValueError, ProcessLookupError):
                    pass


def job_field(env: dict, job_id: str, name: str) -> str:
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True
    ).stdout
    match = re.search(rf"\b{name}=(\S+)", shown)
    return match.group(1) if match else ""


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.slurm
def test_train_sbatch_on_a_real_slurm_cluster_is_requeued_mid_run_and_finishes_from_its_checkpoint(
    slurm_cluster, tmp_path
):
    """scripts/slurm/train.sbatch, unchanged, with two tasks (CPU, gloo) and no --output; SIGUSR1 as SLURM
    sends it before the time limit. The job saves, requeues itself, starts again and finishes the run."""
    env = {
        **slurm_cluster,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    (tmp_path / "run.py").symlink_to(REPO / "run.py")
    max_steps = 150
    submitted = subprocess.run(
        # The test machine's overrides of the #SBATCH lines: no GPUs, two tasks on its two CPUs.
        ["sbatch", "--parsable", "--gres=none", "--ntasks-per-node=2", "--cpus-per-task=1"]
        + [str(REPO / "scripts" / "slurm" / "train.sbatch"), "--model", "ae", *TINY_RUN]
        + [
            "--accelerator",
            "cpu",
            "--max-steps",
            str(max_steps),
            "--eval-every",
            "100",
            "--ckpt-every",
            "10",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    run_dir = tmp_path / "runs" / f"ae-digits-none-seed0-slurm{job_id}"
    log = tmp_path / f"slurm-genae-train-{job_id}.out"
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), "the first checkpoint")
        subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)
        wait_for(lambda: job_field(env, job_id, "Restarts") == "1", "the job to requeue itself")
        # SLURM holds a requeued batch job for 120 s before it may start again; the test does not wait.
        wait_for(lambda: job_field(env, job_id, "JobState") == "PENDING", "the requeued job to be pending")
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
        wait_for(
            lambda: job_field(env, job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
            "the requeued job to finish",
        )
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True)
    output = log.read_text()
    assert job_field(env, job_id, "JobState") == "COMPLETED", output[-3000:]
    stopped = re.search(
        r"stopped by SIGUSR1 after iteration (\d+); saved .*; requeueing SLURM job " + job_id, output
    )
    assert stopped, output[-3000:]
    iteration = int(stopped.group(1))
    assert 0 < iteration < max_steps
    last = f"runs/ae-digits-none-seed0-slurm{job_id}/checkpoints/last.ckpt"
    assert f"resuming from {last} at iteration {iteration}" in output
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == max_steps
    assert [path.name for path in (tmp_path / "runs").iterdir()] == [run_dir.name]
    # Every training row logged once, before or after the requeue.
    with (run_dir / "metrics.csv").open(newline="") as file:
        steps = [int(float(row["step"])) for row in csv.DictReader(file) if row.get("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == max_steps - 1


# ----- W&B -----


def test_every_rank_and_every_restart_of_a_job_names_the_same_wandb_run(tmp_path, monkeypatch):
    import wandb

    from lightning_genae.experiment.loggers import build_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or object())
    run_dir = tmp_path / "run"

    def wandb_id(**task) -> str:
        as_slurm_task(monkeypatch, job_id="7070", **task)
        loggers = build_loggers(RunConfig(logger=["wandb"], wandb_project="project"), run_dir)
        return wandb_init_arguments(loggers[1])["id"]

    # Rank 1 first, as may happen when all start at once: it derives the id and writes nothing.
    from_rank_one = wandb_id(procid=1)
    assert not (run_dir / "wandb" / "run_id").exists()
    from_rank_zero = wandb_id(procid=0)
    assert from_rank_one == from_rank_zero and from_rank_zero.startswith("slurm7070-")
    assert (run_dir / "wandb" / "run_id").read_text() == from_rank_zero
    # The requeued job continues it (resume="allow" makes W&B append to the run rather than refuse it).
    assert wandb_id(restart=1) == from_rank_zero
    assert {call.get("resume") for call in calls} <= {"allow"}
    # Another run folder (another run of the same job) is another W&B run.
    run_dir = tmp_path / "other"
    assert wandb_id(procid=0) != from_rank_zero


# ----- one rank trains what is missing from the cache, the others wait -----

LOAD_AUGMENTER = """
import hashlib, sys
from pathlib import Path
from lightning_genae.experiment import augmenter
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import resolve

resolved = resolve(RunConfig.from_dict(dict(model="gan", data="digits", augment="ae", augmenter_steps=30,
                                           augmenter_width=8, augmenter_latent_dim=8)))
datamodule = resolved.build_datamodule()
augmenter.default_cache_dir = lambda: Path(sys.argv[1])
module, record = augmenter.load_augmenter(resolved.augment, datamodule, 0, accelerator="cpu")
weights = b"".join(value.numpy().tobytes() for value in module.state_dict().values())
print("augmenter", record["source"], hashlib.sha256(weights).hexdigest())
"""


@pytest.mark.slow
def test_ranks_starting_at_once_train_a_missing_augmenter_once_and_all_load_it(tmp_path):
    cache = tmp_path / "augmenters"

    def start(rank: int) -> Forked:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "SLURM_NTASKS": "2",
            "SLURM_JOB_ID": "8080",
            "SLURM_JOB_NAME": "train.sbatch",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
        }
        return Forked(LOAD_AUGMENTER, [str(cache)], env=env)

    # Rank 0 starts only once rank 1 says it waits: started together, rank 0 could (on a slow machine
    # importing torch twice at once) finish before rank 1 looked, and rank 1 would find the file, not wait.
    waiting = start(1)
    deadline = time.time() + 300
    while "rank 1: waiting for local rank 0 to create the augmenter" not in waiting.stderr:
        # warnings may come first; an end means it never waited
        assert waiting.poll() is None and time.time() < deadline, f"rank 1 did not wait: {waiting.stderr}"
        time.sleep(0.05)
    training = start(0)
    for rank in (training, waiting):
        rank.wait(timeout=300)
    training_out, training_err, waiting_out, waiting_err = (
        training.stdout,
        training.stderr,
        waiting.stdout,
        waiting.stderr,
    )
    assert training.returncode == 0, training_err
    assert waiting.returncode == 0, waiting_err
    assert "augmenter: training" in training_out and "augmenter: training" not in waiting_out
    loaded = {
        line.split()[-1]
        for line in (waiting_out + training_out).splitlines()
        if line.startswith("augmenter ")
    }
    assert len(loaded) == 1, "both ranks load the one trained augmenter"
    assert len(list(cache.glob("*.ckpt"))) == 1


def test_a_waiting_rank_stops_with_rank_zeros_reason_when_it_fails(tmp_path, monkeypatch):
    target = tmp_path / "thing.pt"

    def fail() -> None:
        raise ValueError("out of memory")

    as_slurm_task(monkeypatch, job_id="9090", procid=0)
    with pytest.raises(ValueError):
        cluster.created_by_local_rank_zero(target, fail, "thing")
    as_slurm_task(monkeypatch, job_id="9090", procid=1)
    with pytest.raises(
        cluster.RankZeroFailed, match=r"local rank 0 failed to create the thing \(ValueError: out"
    ):
        cluster.created_by_local_rank_zero(target, fail, "thing", poll_s=0.01)
    # A later restart of the job does not read the marker of the failed start: it waits for its own rank 0.
    as_slurm_task(monkeypatch, job_id="9090", procid=1, restart=1)
    target.write_bytes(b"made by rank 0 of the restart")
    cluster.created_by_local_rank_zero(target, fail, "thing", poll_s=0.01)


def start_slurm_tasks(arguments: list[str], job_id: str) -> list[subprocess.Popen]:
    """run.py as the two tasks `srun` starts on one node, without `--kill-on-bad-exit` to end a straggler."""
    port = str(free_port())
    tasks = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_JOB_ID": job_id,
            "SLURM_JOB_NAME": "train.sbatch",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_NODELIST": "localhost",
            "MASTER_PORT": port,
        }
        command = [sys.executable, str(REPO / "run.py"), *arguments]
        command += ["--accelerator", "cpu", "--strategy", "ddp", "--devices", "2"]
        tasks.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return tasks


RANK_ONE_STOPPED = "error: rank 1: stopped, rank 0 could not start the run (see its output)"


def stop_together(tasks: list[subprocess.Popen]) -> list[list[str]]:
    """Each task's stderr lines, once all have exited: within a few minutes on a loaded machine, well before
    the ranks' own verdict timeout (30 minutes)."""
    started = time.time()
    try:
        outputs = [task.communicate(timeout=300) for task in tasks]
    finally:
        for task in tasks:  # a rank left waiting must not outlive the test
            task.kill()
    assert time.time() - started < 300, "rank 1 stops with rank 0, not at a timeout"
    assert [task.returncode for task in tasks] == [2, 2], outputs
    return [err.strip().splitlines() for _, err in outputs]


@pytest.mark.slow
def test_every_rank_stops_at_once_when_rank_zero_refuses_the_run_folder_and_the_error_is_printed_once(
    tmp_path,
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("# lightning-genae run; re-run with: ...\nmodel: ae\n")
    (run_dir / "metrics.csv").write_text("step\n")
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    # Without rank 0's word, rank 1 waited at the process group's rendezvous for the 30-minute timeout.
    tasks = start_slurm_tasks(
        ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)], "7373"
    )
    errors = stop_together(tasks)
    assert errors[0] == [
        f"error: --output {run_dir} already holds a started run (config.yaml, metrics.csv); replace it "
        "with --overwrite, or pick another --output"
    ]
    assert errors[1] == [RANK_ONE_STOPPED]
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before, "nothing written"


@pytest.mark.slow
def test_an_error_every_rank_meets_at_the_start_of_training_is_printed_by_rank_zero_alone(tmp_path):
    run_dir = tmp_path / "run"
    # --batch-size 2 leaves one image per device, which batch norm cannot normalise: found by every rank
    # once its model is built, inside the run.
    arguments = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)]
    errors = stop_together(start_slurm_tasks([*arguments, "--batch-size", "2"], "7575"))
    assert len(errors[0]) == 1 and errors[0][0].startswith("error: --batch-size 2 across 2 devices leaves 1")
    assert errors[1] == [RANK_ONE_STOPPED]
    assert not run_dir.exists(), "the failed start leaves no run folder"


def test_an_input_error_of_every_rank_is_printed_by_rank_zero_alone(monkeypatch, capsys):
    """Every rank of a job reads the same arguments and raises the same error; one copy is enough."""
    for rank in (0, 1):
        as_slurm_task(monkeypatch, job_id="7474", procid=rank)
        assert main(["--model", "ae", *TINY_RUN, "--lr", "-1"]) == 2
        errors = capsys.readouterr().err.strip().splitlines()
        if rank == 0:
            assert len(errors) == 1 and errors[0].startswith("error: --lr must lie in (0, inf)")
        else:
            assert errors == ["error: rank 1: stopped by the error rank 0 reports"]


def test_a_rank_waiting_for_a_damaged_file_to_be_replaced_waits_for_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "thing.pt"
    target.write_bytes(b"damaged")
    damaged = cluster.file_identity(target)
    as_slurm_task(monkeypatch, job_id="9191", procid=1)
    replaced = threading.Timer(0.3, lambda: write_atomically(target, lambda p: Path(p).write_bytes(b"new")))
    replaced.start()
    started = time.time()
    cluster.created_by_local_rank_zero(target, lambda: None, "thing", replacing=damaged, poll_s=0.01)
    assert time.time() - started >= 0.25 and target.read_bytes() == b"new"


@pytest.mark.slow
@pytest.mark.slurm
def test_ablation_sbatch_runs_each_cell_as_an_array_task_then_the_dependent_summary(slurm_cluster, tmp_path):
    """scripts/slurm/ablation.sbatch as docs/augmentation.md shows it: a cell array, then --summarize."""
    env = {
        **slurm_cluster,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    (tmp_path / "run.py").symlink_to(REPO / "run.py")
    grid = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "3", "--seeds", "0,1"]
    grid += ["--output", "runs/abl"]

    def submit(*arguments: str) -> str:
        done = subprocess.run(
            ["sbatch", "--parsable", *arguments], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    # The test machine's overrides of the #SBATCH lines: no GPUs, one CPU per cell.
    template = str(REPO / "scripts" / "slurm" / "ablation.sbatch")
    array = submit("--gres=none", "--cpus-per-task=1", "--array=0-1", template, *grid)
    summary = submit(f"--dependency=afterany:{array}", "--wrap", "python run.py --summarize runs/abl")
    try:
        wait_for(
            lambda: job_field(env, summary, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"),
            f"the summary job (array {array}: {job_field(env, array, 'JobState')}, "
            f"{job_field(env, array, 'Reason')})",
        )
    finally:
        subprocess.run(["scancel", array, summary], env=env, capture_output=True)
    logs = "".join(path.read_text() for path in sorted(tmp_path.glob("slurm-*.out")))
    assert job_field(env, summary, "JobState") == "COMPLETED", logs[-3000:]
    root = tmp_path / "runs" / "abl"
    for seed in (0, 1):
        cell = json.loads((root / f"none-tsfull-seed{seed}" / "summary.json").read_text())
        assert cell["seed"] == seed and cell["global_step"] == 3
    with (root / "ablation.csv").open(newline="") as file:
        assert sorted(int(row["seed"]) for row in csv.DictReader(file)) == [0, 1], "one row per cell"
    assert (root / "ablation.md").is_file()


def test_a_stopped_grids_continue_command_leaves_out_overwrite(tmp_path):
    """Typed again with --overwrite, it would start over the cells the grid had already run."""
    from lightning_genae.experiment.program import continued_as_a_grid, resume_command

    with continued_as_a_grid(["--model", "ae", "--seeds", "0,1", "--output", "g", "--overwrite"]):
        command = resume_command(tmp_path / "g" / "none-tsfull-seed0")
    assert command.endswith("--model ae --seeds 0,1 --output g") and "--overwrite" not in command


def test_a_checkpoint_that_recorded_an_empty_logger_list_resumes(tmp_path):
    """Runs could record `logger: []` (CSV alone) from a config file; their checkpoints still resume."""
    from lightning_genae.run_files import CONFIG_KEY

    run_dir = tmp_path / "run"
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint[CONFIG_KEY]["logger"] = []
    torch.save(checkpoint, last)
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "3"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 3
