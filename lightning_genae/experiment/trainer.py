"""A run's Lightning Trainer: hardware, strategy, budget and cadences in training iterations (one D and one G
update for a GAN), stop signals outside training; and what a run reports beside its metrics."""

from __future__ import annotations

import os
import platform
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.model_summary import get_human_readable_count
from torch import nn

from lightning_genae.api import CallbackSettings, run_callbacks, trainer_kwargs, validation_every
from lightning_genae.callbacks.progress_bar import IterationProgressBar
from lightning_genae.callbacks.stopping import STOP_SIGNALS, cluster_plugins
from lightning_genae.callbacks.training import LogStepIsIteration
from lightning_genae.checkpoint import FIXED_SCHEDULE_ADVICE, AtomicCheckpointIO
from lightning_genae.cluster import current_job, interrupted_by
from lightning_genae.datamodules import InMemoryDataModule
from lightning_genae.errors import ConfigError, describe_error
from lightning_genae.experiment.config import CONFIG_FIELDS, RunConfig, device_count, parse_devices
from lightning_genae.experiment.program import command_prefix, resume_command
from lightning_genae.experiment.resolve import ResolvedRun, stated_world_size
from lightning_genae.metrics.names import Direction, try_parse
from lightning_genae.models import GenerativeModule
from lightning_genae.progress import format_duration
from lightning_genae.source import current_source


def callback_settings(config: RunConfig) -> CallbackSettings:
    """What the run's callbacks read of its options (each of the same name, but the cadence of the logs)."""
    shared = {
        field.name: getattr(config, field.name)
        for field in fields(CallbackSettings)
        if field.name in CONFIG_FIELDS
    }
    return CallbackSettings(**shared, log_every=log_every_n_steps(config))


def log_every_n_steps(config: RunConfig) -> int:
    """Iterations between two rows of training values in the loggers."""
    return min(10, config.eval_every)


def build_callbacks(resolved: ResolvedRun, run_dir: Path) -> list[Callback]:
    """The library's callbacks of a run (`api.run_callbacks`) with this run's options and augmentation."""
    return run_callbacks(
        resolved.model.module,
        run_dir,
        callback_settings(resolved.config),
        configuration=resolved.config.to_dict(),
        continue_with=resume_command(run_dir),
        discriminator_side=resolved.augment.discriminator_side if resolved.augment.names else None,
    )


def build_strategy(config: RunConfig, family: type[GenerativeModule]) -> str:
    """Adversarial models leave one network without gradients in each backward: DDP must expect that, also
    where `--strategy auto` picks DDP for several processes (RunConfig refuses DDP's spawning kin)."""
    if device_count(config.devices) is not None:
        several = stated_world_size(config) > 1
    else:
        # `--devices auto` is every GPU where the accelerator may be one, one process otherwise.
        gpus = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
        several = config.num_nodes > 1 or gpus
    if family.adversarial and (config.strategy == "ddp" or (config.strategy == "auto" and several)):
        return "ddp_find_unused_parameters_true"
    return config.strategy


def default_threads(processes: int = 1) -> int:
    """torch's CPU threads without --threads: $OMP_NUM_THREADS or SLURM's CPUs per task, else this process's
    cores shared among the `processes` it launches (torch's every core is far slower on a shared CPU)."""
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_repeated_cuda_probes() -> None:
    """Without a CUDA device, let torch answer "is CUDA available?" without loading NVML, which Lightning's
    PYTORCH_NVML_BASED_CUDA_CHECK=1 makes it do at every Adam `step()` (0.28 ms per step on a 2-core CPU)."""
    if os.environ.get(NVML_CUDA_CHECK) == "1" and not torch.cuda.is_available():
        os.environ[NVML_CUDA_CHECK] = "0"


def hardware_trainer(
    config: RunConfig, family: type[GenerativeModule], **trainer_arguments: Any
) -> pl.Trainer:
    """A `pl.Trainer` of `family` on `config`'s hardware; hardware this machine lacks is one line."""
    manual_launch = "NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ
    if config.num_nodes > 1 and current_job() is None and not manual_launch:
        # Lightning would start this node's processes and wait for the other nodes' forever, silently.
        raise ConfigError(
            f"--num-nodes {config.num_nodes} outside a job that starts the other nodes (srun, torchrun, or "
            "NODE_RANK and MASTER_ADDR on each); give --num-nodes 1"
        )
    try:
        trainer = pl.Trainer(
            precision=config.precision,
            accelerator=config.accelerator,
            devices=parse_devices(config.devices),
            strategy=build_strategy(config, family),
            num_nodes=config.num_nodes,
            **trainer_arguments,
        )
    except (MisconfigurationException, ValueError, RuntimeError, TypeError, ImportError) as error:
        # ImportError: an accelerator or strategy whose package is not installed (tpu: torch_xla).
        raise ConfigError(
            f"Trainer set-up failed: {describe_error(error)}; check --accelerator {config.accelerator} "
            f"--devices {config.devices} --num-nodes {config.num_nodes} --strategy {config.strategy} "
            f"--precision {config.precision} (without a GPU: --accelerator cpu)"
        ) from None
    # In the environment too, so that the processes the run starts take the same count.
    threads = config.threads or default_threads(trainer.num_devices if current_job() is None else 1)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return trainer


def build_trainer(
    config: RunConfig,
    family: type[GenerativeModule],
    run_dir: Path,
    loggers: list,
    callbacks: list[Callback],
) -> pl.Trainer:
    """The training Trainer: budget and cadences in training iterations, whatever the family's step count."""
    steps_per_iteration = family.optimizer_steps_per_iteration
    skip_repeated_cuda_probes()
    return hardware_trainer(
        config,
        family,
        default_root_dir=str(run_dir),
        # Lightning counts optimizer steps; --max-steps counts training iterations.
        max_steps=trainer_kwargs(family, config.max_steps)["max_steps"] if config.max_steps else -1,
        max_epochs=config.max_epochs if config.max_epochs else (None if config.max_steps else -1),
        logger=loggers,
        callbacks=[*callbacks, LogStepIsIteration(steps_per_iteration), IterationProgressBar()],
        # The console prints one line about the model instead of Lightning's table.
        enable_model_summary=False,
        log_every_n_steps=log_every_n_steps(config),
        **validation_every(config.eval_every),
        num_sanity_val_steps=0,
        fast_dev_run=config.fast_dev_run,
        plugins=[
            *cluster_plugins(),
            AtomicCheckpointIO(resume_command(run_dir)),
        ],
    )


def prepare_data_early(datamodule: InMemoryDataModule, trainer: pl.Trainer) -> None:
    """Surface missing or bad data before a run folder or logger is created (local rank 0 only)."""
    if trainer.local_rank != 0:
        return
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")


@contextmanager
def _stopping_on_signals(stop: Callable[[], tuple[str, str] | None]) -> Iterator[None]:
    """Within: a stop signal gives Python's handlers back, then ends with 128 + the signal and the line
    "stopped by SIGINT {when}; {advice}" of `stop()`, or (None) does what Python's handler does. Signal
    handlers belong to the main thread: a run in another thread keeps Python's own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def restore() -> None:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)

    def handle(signum: int, frame: FrameType | None) -> None:
        restore()
        if (said := stop()) is None:
            signal.raise_signal(signum)
            return
        raise interrupted_by(signum, f"stopped by {signal.Signals(signum).name} {said[0]}", said[1])

    previous = {stop_signal: signal.signal(stop_signal, handle) for stop_signal in STOP_SIGNALS}
    try:
        yield
    finally:
        restore()


def stop_outside_training(
    run_dir: Path, progress: Any, undo: Callable[[], None], resuming: bool = False
) -> AbstractContextManager[None]:
    """A stop signal while the run sets up or before its final evaluation: before training the folder is put
    back first (`undo`), after it `--resume last` continues (`progress`: its `started` and `finished`)."""

    def stop() -> tuple[str, str] | None:
        resume = f"continue with: {resume_command(run_dir)}"
        if progress.finished:
            return None  # the run is done: what the signal does is Python's again
        if progress.started:
            return "after training, before the final evaluation", resume
        undo()  # before a requeue can end this process
        if resuming:
            return "before training resumed", resume
        return "before training started; nothing of the run was kept", "start it again"

    return _stopping_on_signals(stop)


def stop_at_once_on_signal(where: str, advice: str) -> AbstractContextManager[None]:
    """SIGINT, SIGTERM or SIGUSR1 stop what runs inside at once, with 128 + the signal and one line: "stopped
    by SIGINT {where}; {advice}" (inside a Trainer call, Lightning would turn Ctrl-C into exit 1)."""
    return _stopping_on_signals(lambda: (where, advice))


def stop_during_final_evaluation(run_dir: Path) -> AbstractContextManager[None]:
    """A stop signal during the final evaluation: the weights are in last.ckpt; `--resume last` runs it."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return stop_at_once_on_signal(
        f"during the final evaluation; the trained weights are in {last}",
        f"finish the run (summary.json) with: {resume_command(run_dir)}, or score them with: "
        f"{command_prefix()} --evaluate {shlex.quote(str(last))}",
    )


VERSIONED_PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "wandb",
    "numpy",
    "lightning-genae",
)


def environment_info(trainer: pl.Trainer) -> dict[str, Any]:
    """What a number was measured on: devices, the precision that ran, versions, the source's commit."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": f"{trainer.num_devices} x {device.type} ({name})",
        # Lightning's, not the one asked for: --precision 16-mixed runs as bf16-mixed on a CPU.
        "precision": str(trainer.precision),
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "versions": versions,
        "source": current_source(),
    }


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats; "step" is the x-axis override, not a metric."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "step" and torch.as_tensor(value).numel() == 1
    }


def format_metrics_table(metrics: dict[str, float], headline: str | None = None) -> str:
    """One metric per line, alphabetical, under the headline metric (marked, ruled off) where there is one."""
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ----------"]
    if headline in metrics:
        parsed = try_parse(headline)
        said = "" if parsed is None or parsed.direction is Direction.NONE else f", {parsed.direction.value}"
        lines += [f"{headline.ljust(width)}  {metrics[headline]:.6g}  <- headline{said}", ""]
    lines += [f"{key.ljust(width)}  {metrics[key]:.6g}" for key in sorted(metrics) if key != headline]
    return "\n".join(lines)


def format_final_line(metrics: dict[str, float], headline: str | None) -> str:
    """The end of a run in one line, for a run among many (a grid's cell): its headline and the count."""
    shown = f"{headline} {metrics[headline]:.6g}; " if headline in metrics else ""
    return f"final: {shown}{len(metrics)} metrics in summary.json"


# Discriminator outputs (logits) this large come only from runaway weights: a sigmoid saturates near 20, a
# hinge margin is 1, and a healthy run stays within tens.
SATURATED_LOGIT = 1e4


def collapse_warning(metrics: dict[str, float], lr: float | None) -> str | None:
    """One line when the final training values show a saturated discriminator (loss 0, outputs beyond
    SATURATED_LOGIT: finite, so no divergence is reported), else None; `lr`: None under a fixed schedule."""
    outputs = [abs(metrics[key]) for key in ("train/d_real", "train/d_fake") if key in metrics]
    if metrics.get("train/loss_d") != 0.0 or not outputs or max(outputs) < SATURATED_LOGIT:
        return None
    advice = f"; lower --lr (this run used {lr:g})" if lr is not None else f"; {FIXED_SCHEDULE_ADVICE}"
    return (
        f"warning: the discriminator saturated (train/loss_d 0, outputs up to {max(outputs):.3g}): the "
        f"generator has likely collapsed and its samples stopped improving{advice}"
    )


def format_count(n: int) -> str:
    """Parameter counts as Lightning's summary writes them: 950, 1.2 K, 336 K, 4.1 M."""
    return get_human_readable_count(n).strip()


def describe_model(name: str, model: nn.Module, trainer: pl.Trainer) -> str:
    """One line instead of Lightning's summary table: parameters per network, device, precision, threads."""

    def count(module: nn.Module, trained: bool, recurse: bool = True) -> int:
        return sum(p.numel() for p in module.parameters(recurse=recurse) if p.requires_grad == trained)

    children = list(model.named_children())
    detail = ", ".join(
        f"{child} {format_count(n)}" for child, module in children if (n := count(module, True))
    )
    # Parts that are not trained here (the ae-d augmenter inside the discriminator's augmentation, the
    # generator's EMA copy) are named, so "frozen" is never read as a network that does not learn.
    frozen = [(child, count(module, False)) for child, module in children] + [
        ("other", count(model, False, recurse=False))
    ]
    if named := ", ".join(f"{child} {format_count(n)}" for child, n in frozen if n):
        detail += f"; not trained by the optimizers: {named}"
    devices = trainer.num_devices * trainer.num_nodes
    device = trainer.strategy.root_device.type
    where = f"{devices} x {device}" if devices > 1 else device
    threads = torch.get_num_threads()
    return (
        f"model: {name}, {format_count(count(model, True))} parameters"
        + (f" ({detail})" if detail else "")
        + f", {where}, {trainer.precision}, {threads} CPU thread{'s' if threads != 1 else ''}"
    )


def describe_training(first: int, last: int, seconds: float) -> str:
    """The end-of-training line, "trained 2000 iterations in 2 min 10 s" (no rate: it holds validations)."""
    done = last - first
    span = f"{done} iteration{'s' if done != 1 else ''}"
    if first:
        span += f" ({first} -> {last})"
    return f"trained {span} in {format_duration(seconds)}"
