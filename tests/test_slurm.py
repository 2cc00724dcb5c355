"""Cluster jobs: which job and rank a process is, a run folder that survives a requeue, signals that save.

The end-to-end test at the bottom starts a real one-node SLURM cluster (slurmctld, slurmd, munged) on
this machine, submits scripts/slurm/train.sbatch with two tasks and requeues it mid-run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae import cluster
from lightning_genae.cli import _checkpoint_of_restarted_job, main
from lightning_genae.config import RunConfig
from lightning_genae.train import default_run_dir

REPO = Path(__file__).resolve().parents[1]
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


def test_ranks_started_by_lightnings_launcher_get_the_folder_of_the_process_that_started_them():
    parent_stamp = cluster.run_stamp()
    child = subprocess.run(
        [sys.executable, "-c", "from lightning_genae import cluster; print(cluster.run_stamp())"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == parent_stamp
    # The process that published a stamp gets a new one for its own next run.
    time.sleep(1.1)
    assert os.environ[cluster.STAMP_VARIABLE] == f"{os.getpid()}:{parent_stamp}"
    assert cluster.run_stamp() != parent_stamp


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


def test_a_requeued_job_with_output_resumes_only_when_slurm_says_it_restarted(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    as_slurm_task(monkeypatch, job_id="6161")
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "3", "--output", str(run_dir)]) == 0
    as_slurm_task(monkeypatch, job_id="6161", restart=1)
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "6", "--output", str(run_dir)]) == 0
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6
    # A job that is no restart does not take over the checkpoint of a folder it was merely pointed at.
    as_slurm_task(monkeypatch, job_id="6262")
    assert _checkpoint_of_restarted_job(RunConfig(model="ae", data="digits", output=str(run_dir))) is None
    as_slurm_task(monkeypatch, job_id="6262", restart=1)
    found = _checkpoint_of_restarted_job(RunConfig(model="ae", data="digits", output=str(run_dir)))
    assert found is not None and found.path == run_dir / "checkpoints" / "last.ckpt"


# ----- signals -----


def start_long_run(run_dir: Path) -> subprocess.Popen:
    """An ae run far longer than the test, checkpointing every 5 iterations; returns once it has trained."""
    command = [sys.executable, str(REPO / "run.py"), "--model", "ae", *TINY_RUN]
    command += ["--max-steps", "100000", "--eval-every", "100000", "--image-every", "100000"]
    command += ["--ckpt-every", "5", "--output", str(run_dir)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert process.poll() is None and time.time() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.2)
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_last_ckpt_at_an_iteration_and_exits_with_one_line(tmp_path, signum):
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
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
    # It continues from there.
    assert (
        main(
            [
                "--model",
                "ae",
                *TINY_RUN,
                "--output",
                str(run_dir),
                "--resume",
                "last",
                "--max-steps",
                str(iteration + 2),
            ]
        )
        == 0
    )
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == iteration + 2


def test_a_second_ctrl_c_exits_at_once_without_saving(tmp_path):
    """The handler itself, on a real signal: a run cannot be caught mid-iteration reliably enough to test."""
    script = f"""
import os, signal, time
from types import SimpleNamespace
from lightning_genae.stopping import StopOnSignal
callback = StopOnSignal({str(tmp_path / "last.ckpt")!r}, {str(tmp_path)!r})
callback.on_train_start(SimpleNamespace(strategy=SimpleNamespace(launcher=None)), None)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.5)
print("still running after the first Ctrl-C", flush=True)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(5)
print("not reached")
"""
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 130
    assert result.stdout.strip() == "still running after the first Ctrl-C"
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Ctrl-C: stopping after this iteration and saving last.ckpt")
    assert lines[-1].startswith("second Ctrl-C: stopped at once, without saving")
    assert not (tmp_path / "last.ckpt").exists()
    assert time.time() - started < 4.5 + 30, "it did not wait for the sleep after the second Ctrl-C"
