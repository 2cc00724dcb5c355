"""Continuing a run: its checkpoint, whether anything is left to train, and what it carries on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.cluster import ClusterJob, current_job
from lightning_genae.errors import ConfigError, RunFolderRefused, agree
from lightning_genae.experiment.config import CHANGEABLE_ON_RESUME, RunConfig, flag, resume_conflicts
from lightning_genae.experiment.run_folder import read_json_object, read_summary
from lightning_genae.lightning_internals import configured_optimizers
from lightning_genae.models import MODELS, GenerativeModule, changeable_on_resume, unread_by_run
from lightning_genae.models.base import OBJECTIVE_FORM_KEY, SOURCE_KEY
from lightning_genae.progress import say, warn
from lightning_genae.run_files import CLUSTER_JOB_KEY, PER_INVOCATION, last_checkpoint
from lightning_genae.source import other_source_note

if TYPE_CHECKING:
    from lightning_genae.experiment.resolve import ResolvedRun


def to_resume(resume: str, output: str | None) -> RunCheckpoint:
    """The checkpoint `--resume` names (`last` = `<--output>/checkpoints/last.ckpt`)."""
    if resume == "last":
        if output is None:
            raise ConfigError("--resume last needs --output RUN_DIR, the run folder to continue")
        resume = str(last_checkpoint(output))
    return RunCheckpoint.load(resume, "--resume")


def written_by(checkpoint: RunCheckpoint, job: ClusterJob) -> str:
    """Which job wrote `checkpoint` as `job` sees it (its `CLUSTER_JOB_KEY`): `own`, `other`, or `unknown`
    (it names no job, or the job's id is torchrun's `none`, which every job without --rdzv-id shares)."""
    writer = checkpoint.contents.get(CLUSTER_JOB_KEY)
    if writer is not None and writer != job.tag:
        return "other"
    return "own" if writer is not None and job.identified else "unknown"


def earlier_attempt_wrote(run_dir: Path) -> str | None:
    """`written_by` of `run_dir`'s last.ckpt for this restarted cluster job; None if none or no such job."""
    job = current_job()
    path = last_checkpoint(run_dir)
    if job is None or job.restart_count == 0 or not path.is_file():
        return None
    try:
        return written_by(RunCheckpoint.load(path, "--resume"), job)
    except ConfigError:
        return None


def _budgets(
    resume: RunCheckpoint, config: RunConfig, steps_per_iteration: int
) -> list[tuple[str, int, int]]:
    """(flag, budget, reached) per budget: --max-steps in iterations, --max-epochs in epochs."""
    budgets = []
    if config.max_steps:
        budgets.append(("--max-steps", config.max_steps, resume.iteration(steps_per_iteration)))
    if config.max_epochs is not None:
        budgets.append(("--max-epochs", config.max_epochs, resume.epochs()))
    return budgets


def training_complete(resume: RunCheckpoint, config: RunConfig, steps_per_iteration: int) -> bool:
    """Whether the resumed checkpoint is at the end of the run's budget (its final evaluation may not be)."""
    return any(reached == budget for _, budget, reached in _budgets(resume, config, steps_per_iteration))


def continue_from(
    resume: RunCheckpoint | None, run_dir: Path, resolved: ResolvedRun, explicit_resume: bool
) -> RunCheckpoint | None:
    """The checkpoint a `--resume` into the run's own folder continues from: refused where the folder's
    last.ckpt went further (which it would replace), unless this requeued job's earlier attempt wrote it."""
    last = last_checkpoint(run_dir)
    if resume is None or not explicit_resume or resume.run_folder.resolve() != run_dir.resolve():
        return resume
    if not last.is_file() or last.resolve() == resume.path.resolve():
        return resume
    try:
        newest = RunCheckpoint.load(last, "--resume")
    except ConfigError:
        return resume  # a damaged last.ckpt holds nothing to keep
    steps_per_iteration = resolved.model.module.optimizer_steps_per_iteration
    went_on_to = newest.iteration(steps_per_iteration)
    if went_on_to <= resume.iteration(steps_per_iteration):
        return resume
    job = current_job()
    if job is not None and job.restart_count > 0 and written_by(newest, job) == "own":
        say(f"--resume {resume.path}: this job's earlier attempt went on to iteration {went_on_to}; going on")
        return newest
    raise ConfigError(
        f"--resume {resume.path}: the run in {run_dir} went on to iteration {went_on_to}; give --output NEW"
    )


def check_steps_left(resume: RunCheckpoint, resolved: ResolvedRun) -> None:
    """Refuse a --resume with nothing left to train; a run stopped in its final evaluation runs it."""
    config = resolved.config
    steps_per_iteration = resolved.model.module.optimizer_steps_per_iteration
    done = resume.iteration(steps_per_iteration)
    budgets = _budgets(resume, config, steps_per_iteration)
    spent = [f"{option} {budget}" for option, budget, reached in budgets if budget <= reached]
    if not spent:
        return
    # A summary.json of an earlier budget's end is not this one's.
    summary = read_summary(resume.run_folder) or {}
    if training_complete(resume, config, steps_per_iteration) and summary.get("global_step") != done:
        say(f"--resume {resume.path}: training is complete at iteration {done}; running the final evaluation")
        return
    raise ConfigError(
        f"--resume {resume.path}: the run is at iteration {done} (epoch {resume.epochs()}), and "
        f"{' and '.join(spent)} leaves nothing to train; raise it, or --evaluate it"
    )


def say_what_changes(
    resume: RunCheckpoint, config: RunConfig, run_dir: Path, model: GenerativeModule
) -> None:
    """One line per thing a resume changes that a user could otherwise miss."""
    stored = resume.stored_config("--resume")
    form = model.objective_form()
    if form is not None and resume.contents.get(OBJECTIVE_FORM_KEY) != form:
        say(f"note: {resume.path} records another form of {config.model}'s objective than this one ({form})")
    if note := other_source_note(resume.contents.get(SOURCE_KEY), str(resume.path)):
        say(f"{note}; the run goes on under this code")
    if resume.run_folder.resolve() != run_dir.resolve():
        say(f"continuing the run of {resume.run_folder} in {run_dir}: new checkpoints and metrics go there")
    for name in ("lr", *changeable_on_resume(config.model)):
        new, old = config.plugin_options.get(name), stored.get(name)
        if new is not None and old is not None and new != old:
            say(f"{flag(name)} {new} replaces the checkpoint's {old} from here on")
    evaluated = read_json_object(run_dir / "eval.json") or {}
    if "checkpoint" in evaluated and "global_step" in evaluated:
        scored = f"{evaluated['checkpoint']} at iteration {evaluated['global_step']}"
        say(f"{run_dir / 'eval.json'} scored {scored}; run --evaluate again for the new weights")


class LearningRateOnResume(Callback):
    """Gives the restored optimizers the learning rate this invocation asked for (Lightning restores the
    checkpoint's); under a schedule the base rate changes and the current rate keeps the schedule's factor."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(pl_module, GenerativeModule) and pl_module.lower_learning_rate() is None:
            # The family sets its rate at every update from the iteration (the GAN paper's schedule, which
            # rescales its momentum by the restored rate): --lr does not set it, and a fresh rate would
            # scale the restored momentum.
            return
        fresh = configured_optimizers(pl_module.configure_optimizers())
        schedulers = {
            id(config.scheduler.optimizer): config.scheduler for config in trainer.lr_scheduler_configs
        }
        for new, restored in zip(fresh, trainer.optimizers, strict=True):
            scheduler = schedulers.get(id(restored))
            for index, (new_group, restored_group) in enumerate(
                zip(new.param_groups, restored.param_groups, strict=True)
            ):
                # A scheduler built on the fresh optimizer moved its base rate to "initial_lr".
                wanted = new_group.get("initial_lr", new_group["lr"])
                if scheduler is None:
                    restored_group["lr"] = wanted
                    continue
                old_base = scheduler.base_lrs[index]
                restored_group["lr"] = restored_group["lr"] * wanted / old_base if old_base else wanted
                restored_group["initial_lr"] = wanted
                scheduler.base_lrs[index] = wanted


# Checkpoint keys: the SHA-256 of the run's --augment-ckpt file, and of its augmenter's weights (any source).
AUGMENTER_SHA256_KEY = "genae_augmenter_sha256"
AUGMENTER_WEIGHTS_KEY = "genae_augmenter_weights_sha256"


class AugmenterInCheckpoints(Callback):
    """Each checkpoint names the augmenter the run trained with, for `check_same_augmenter`."""

    def __init__(self, augmenter: dict[str, Any]) -> None:
        self.recorded = {
            AUGMENTER_SHA256_KEY: augmenter.get("sha256"),
            AUGMENTER_WEIGHTS_KEY: augmenter.get("weights_sha256"),
        }

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint.update({key: value for key, value in self.recorded.items() if isinstance(value, str)})


def check_same_augmenter(resume: RunCheckpoint, augmenter: dict[str, Any]) -> None:
    """Refuse an --augment-ckpt file of other contents than the resumed run's (half one augmenter's run);
    other augmenter weights (a cache trained again) are said in a line."""
    now, before = augmenter.get("sha256"), resume.contents.get(AUGMENTER_SHA256_KEY)
    if isinstance(now, str) and isinstance(before, str) and now != before:
        raise RunFolderRefused(
            f"--augment-ckpt {augmenter.get('path')} holds another augmenter than the run in "
            f"{resume.run_folder} trained with; put that file back, or give --overwrite"
        )
    now, before = augmenter.get("weights_sha256"), resume.contents.get(AUGMENTER_WEIGHTS_KEY)
    if isinstance(now, str) and isinstance(before, str) and now != before:
        warn(
            f"note: the augmenter {augmenter.get('path')} ({augmenter.get('source')}) is not the one the run "
            f"in {resume.run_folder} trained with so far; --overwrite starts a run of one augmenter"
        )


def check_resume_options(resume: RunCheckpoint, stored: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse options given with --resume that would make it another run (see CHANGEABLE_ON_RESUME)."""
    model = stored.get("model", "")
    changeable = changeable_on_resume(model)
    if model in MODELS and not MODELS[model].generates:
        # No generative metric, no FD to choose best.ckpt on: the sample count is left unread.
        changeable = (*changeable, "eval_samples")
    # The options this run leaves unread (--lr under a paper's training) are not compared: given, they are
    # refused as unread once the run's options are resolved.
    unread = unread_by_run(model, stored)
    conflicts = resume_conflicts(stored, given, {*changeable, *unread})
    if conflicts:
        may_change = [
            name
            for name in (*CHANGEABLE_ON_RESUME, *changeable)
            if name not in PER_INVOCATION and name not in unread
        ]
        raise ConfigError(
            f"--resume {resume.path}: {'; '.join(conflicts)} would make it another run; drop "
            f"{agree(conflicts, 'it', 'them')} or give another --output (changeable on resume: "
            f"{', '.join(flag(name) for name in may_change)})"
        )
