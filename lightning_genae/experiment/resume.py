"""Which checkpoint a run continues: the one `--resume` names, or for a restarted cluster job the one its
own earlier attempt wrote."""

from __future__ import annotations

from pathlib import Path

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.cluster import ClusterJob
from lightning_genae.errors import ConfigError
from lightning_genae.run_files import CLUSTER_JOB_KEY, last_checkpoint


def to_resume(resume: str | None, output: str | None) -> RunCheckpoint | None:
    """The checkpoint `--resume` names (`last` = `<--output>/checkpoints/last.ckpt`), or None."""
    if resume is None:
        return None
    if resume != "last":
        return RunCheckpoint.load(resume, "--resume")
    if output is None:
        raise ConfigError("--resume last needs --output RUN_DIR, the run folder to continue")
    path = last_checkpoint(output)
    if not path.is_file():
        from lightning_genae.experiment.run_lock import RunFolderLock

        # A run still writing there (before its first checkpoint) is the reason to name.
        RunFolderLock.refuse_if_held(Path(output))
        raise ConfigError(
            f"--resume last: {path} does not exist; pass --output of a run folder with "
            "checkpoints/last.ckpt, or --resume PATH.ckpt"
        )
    return RunCheckpoint.load(path, "--resume")


def written_by(checkpoint: RunCheckpoint, job: ClusterJob) -> str:
    """Which job wrote `checkpoint` as `job` sees it (its `CLUSTER_JOB_KEY`): `own`, another job's
    (`other`), or `unknown` (it names no job: written outside one or by an older version, or the job's id is
    torchrun's `none`, which every job without --rdzv-id shares)."""
    writer = checkpoint.contents.get(CLUSTER_JOB_KEY)
    if writer is not None and writer != job.tag:
        return "other"
    return "own" if writer is not None and job.identified else "unknown"


def earlier_attempt_wrote(run_dir: Path) -> str | None:
    """`written_by` of `run_dir`'s last.ckpt for the cluster job this process is a restart of; None where
    this is no restarted job or there is no readable checkpoint. A restart continues its own run rather than
    replacing it again (an `--overwrite` in its command was done by its earlier attempt)."""
    from lightning_genae.cluster import current_job

    job = current_job()
    path = last_checkpoint(run_dir)
    if job is None or job.restart_count == 0 or not path.is_file():
        return None
    try:
        return written_by(RunCheckpoint.load(path, "--resume"), job)
    except ConfigError:
        return None
