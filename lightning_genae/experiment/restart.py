"""The run a requeued SLURM job or a restarted torchrun job continues: its command runs again, without
`--resume`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.cluster import ClusterJob
from lightning_genae.errors import RunFolderRefused
from lightning_genae.experiment.ablation.conflicts import finished_run_conflicts, unfinished_run_conflicts
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resume import written_by
from lightning_genae.experiment.run_folder import read_summary
from lightning_genae.experiment.train import default_run_dir
from lightning_genae.run_files import CLUSTER_JOB_KEY, last_checkpoint


def checkpoint_of_restarted_job(
    job: ClusterJob, values: RunConfig, as_a_fresh_run: Callable[[], RunConfig]
) -> RunCheckpoint | None:
    """The last.ckpt a requeued SLURM or restarted torchrun job continues from (its default folder, or
    `--output`), never another job's; one naming no job is refused where the job cannot tell whose it is."""
    if values.output:
        if job.restart_count == 0:
            return None
        folder = Path(values.output)
    else:
        if job.restart_count == 0 and not job.identified:
            # torchrun without --rdzv-id: the folder named after the job is every such job's.
            return None
        folder = default_run_dir(as_a_fresh_run())
    path = last_checkpoint(folder)
    if not path.is_file():
        return None
    checkpoint = RunCheckpoint.load(path, "--resume")
    writer = written_by(checkpoint, job)
    if writer != "unknown":
        return checkpoint if writer == "own" else None
    # A checkpoint that names no job, or a job id every torchrun without --rdzv-id shares.
    if values.output and values.overwrite:
        # Compared with the run the folder holds, finished or not (a failed one too), by the checkpoint read.
        summary, fresh = read_summary(folder), as_a_fresh_run()
        if summary is not None:
            conflicts = finished_run_conflicts(summary, fresh, folder)
        else:
            conflicts = unfinished_run_conflicts(checkpoint.stored_config("--resume"), fresh)
        if conflicts:
            return None  # another run's options: the run the --overwrite replaces
    elif job.identified:
        return checkpoint  # it names no job (written outside one, or by an older version): continued
    if CLUSTER_JOB_KEY not in checkpoint.contents:
        why = "the checkpoint names no job: written outside one, or by an older version"
    else:
        why = "torchrun without --rdzv-id gives every job the id none"
    fix = (
        "continue it with --resume last in place of --overwrite, or submit the job again to replace it"
        if values.overwrite
        else "give torchrun --rdzv-id unique to each job, or continue it with --resume last"
    )
    raise RunFolderRefused(
        f"{folder}: this restarted job cannot tell whether {path} is its own run to continue or another "
        f"job's ({why}); {fix}"
    )
