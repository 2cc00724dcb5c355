"""The checkpoint format: Lightning's state plus the run configuration under CONFIG_KEY as plain values, read
with `weights_only=True`, so a file handed over by someone else cannot run code."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from lightning_genae.cache import save_torch_atomically
from lightning_genae.datamodules.base import EVALUATION_CONTENT_KEY, TRAIN_CONTENT_KEY
from lightning_genae.errors import ConfigError, WriteFailed, describe_error
from lightning_genae.run_files import CONFIG_KEY, PER_INVOCATION

if TYPE_CHECKING:
    from lightning_genae.datamodules.base import InMemoryDataModule

Module = TypeVar("Module", bound=pl.LightningModule)
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def in_a_run_folder(checkpoint_path: Path) -> bool:
    """Whether the checkpoint lies in a run folder's checkpoints/ (`<run>/checkpoints/x.ckpt`)."""
    return checkpoint_path.absolute().parent.name == "checkpoints"


def run_folder_of(checkpoint_path: Path) -> Path:
    """`<run>/checkpoints/x.ckpt` -> `<run>`; a checkpoint elsewhere -> its folder."""
    parent = checkpoint_path.absolute().parent
    return parent.parent if in_a_run_folder(checkpoint_path) else parent


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint file, read once; `flag` is the caller's name for it (`--resume`), which starts errors."""

    path: Path
    contents: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, flag: str) -> RunCheckpoint:
        """Read `path` with `weights_only=True`: tensors and plain values only, so no code in it runs."""
        path = Path(path)
        # is_file first: a named pipe would be waited on.
        if not path.is_file():
            raise ConfigError(f"{flag}: no checkpoint file at {path}")
        try:
            with warnings.catch_warnings():
                # torch's notes on pickle protocols speak to its developers, not to a user of this program.
                warnings.simplefilter("ignore")
                contents = torch.load(path, map_location="cpu", weights_only=True)
            lightnings = isinstance(contents, dict) and "state_dict" in contents
            problem = None if lightnings else "not a Lightning checkpoint: it holds no state_dict"
        except Exception as error:  # noqa: BLE001 - not torch's, truncated, damaged or holding a pickled object
            problem = describe_error(error)
        if problem is not None:
            raise ConfigError(f"{flag}: {path} is not a readable checkpoint ({problem})")
        return cls(path, contents)

    @property
    def run_folder(self) -> Path:
        return run_folder_of(self.path)

    def stored_config(self, flag: str) -> dict[str, Any]:
        """The checkpoint's run configuration, less what belongs to one invocation; refused where absent."""
        stored = self.contents.get(CONFIG_KEY)
        if not isinstance(stored, dict) or not stored:
            raise ConfigError(
                f"{flag}: {self.path} holds no lightning-genae run configuration; load a checkpoint of "
                "another Trainer with its family's class (e.g. VAEModule.load_from_checkpoint(path))"
            )
        return {key: value for key, value in stored.items() if key not in PER_INVOCATION}

    def _recorded(self, key: str) -> Any:
        """What the datamodule's state holds under `key`, whatever the datamodule's class name it is under."""
        for value in self.contents.values():
            if isinstance(value, dict) and key in value:
                return value[key]
        return None

    def training_data_sha256(self) -> str | None:
        """The SHA-256 of the training split the run trained on, or None if the checkpoint records none."""
        recorded = self._recorded(TRAIN_CONTENT_KEY)
        return recorded if isinstance(recorded, str) else None

    def check_trained_on(self, datamodule: InMemoryDataModule, flag: str) -> None:
        """Refuse data whose training, validation or test split differs by content from the run's (or that a
        checkpoint without a hash of its training data cannot be checked against)."""
        evaluation = self._recorded(EVALUATION_CONTENT_KEY) or {}
        recorded = {"train": self.training_data_sha256(), **evaluation}
        for split, saved in recorded.items():
            now = datamodule.content_sha256(split)
            if saved != now:
                raise ConfigError(
                    f"{flag} {self.path}: the {SPLIT_NAMES[split]} {datamodule.item_noun} differ from the "
                    f"run's (SHA-256 {str(saved)[:12]} in the checkpoint, {now[:12]} now); restore the run's "
                    f"data or version, {datamodule.reading_advice()}or start a new run"
                )

    def iteration(self, steps_per_iteration: int) -> int:
        """Training iterations done when it was saved (Lightning counts optimizer steps)."""
        return int(self.contents.get("global_step", 0)) // steps_per_iteration

    def epochs(self) -> int:
        """Training epochs done when it was saved (Lightning's count; 0 where the checkpoint has none)."""
        try:
            return int(self.contents["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError, ValueError):
            return 0

    def restore(self, module_type: type[Module], flag: str) -> Module:
        """The module, built from the checkpoint's hyper-parameters and weights (in eval mode, on the CPU)."""
        try:
            module = module_type(**self.contents.get("hyper_parameters", {}))
        except (TypeError, RuntimeError, ConfigError) as error:
            raise ConfigError(
                f"{flag}: {self.path} does not hold a {module_type.__name__} of this version "
                f"({describe_error(error)})"
            ) from None
        self.check_fits(module, flag)
        module.load_state_dict(self.contents["state_dict"])
        return module.eval()

    def check_fits(self, module: torch.nn.Module, flag: str, *, training: bool = False) -> None:
        """Refuse, before loading, weights that do not fit `module` (names, shapes) or hold NaN or inf."""
        problem = state_dict_mismatch(module.state_dict(), self.contents["state_dict"])
        if problem is not None:
            problem = f"does not hold a {type(module).__name__} of this version ({problem})"
        elif bad := non_finite_state(
            self.contents if training else {"state_dict": self.contents["state_dict"]}
        ):
            problem = f"holds NaN or inf values ({_listed(bad)}); pick an earlier checkpoint of the run"
        if problem is not None:
            raise ConfigError(f"{flag}: {self.path} {problem}")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str | None:
    """What keeps `given` from loading in place of `expected` (missing, unexpected, reshaped), or None."""
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    reshaped = [
        f"{name} {tuple(given[name].shape)} where the model has {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in given and tuple(given[name].shape) != tuple(tensor.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(expected)} weights missing: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {_listed(unexpected)}")
    if reshaped:
        problems.append(f"shapes differ: {_listed(reshaped)}")
    return "; ".join(problems) or None


def _floating_tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every floating-point tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _floating_tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _floating_tensors(item, f"{name}[{index}]")


def non_finite_state(checkpoint: Mapping[str, Any]) -> list[str]:
    """Names of a checkpoint's weights, buffers and optimizer-state tensors that hold NaN or inf."""
    named = [
        *_floating_tensors(checkpoint.get("state_dict", {}), ""),
        *_floating_tensors(checkpoint.get("optimizer_states", []), "optimizer_states"),
    ]
    finite: dict[int, bool] = {}
    for device in {tensor.device for _, tensor in named}:
        indices = [index for index, (_, tensor) in enumerate(named) if tensor.device == device]
        flags = torch.stack([torch.isfinite(named[index][1]).all() for index in indices]).tolist()
        finite.update(zip(indices, flags, strict=True))
    return [name for index, (name, _) in enumerate(named) if not finite[index]]


def last_finite_checkpoint(directory: Path, steps_per_iteration: int) -> tuple[Path, int] | None:
    """(path, iteration) of the newest readable checkpoint in `directory` whose state is all finite;
    `last.ckpt` before another file of the same iteration."""
    found: tuple[Path, int] | None = None
    for path in sorted(directory.glob("*.ckpt"), key=lambda path: (path.name != "last.ckpt", path.name)):
        try:
            checkpoint = RunCheckpoint.load(path, "resume")
        except ConfigError:
            continue  # unreadable or not a checkpoint: nothing to resume from
        if non_finite_state(checkpoint.contents):
            continue
        iteration = checkpoint.iteration(steps_per_iteration)
        if found is None or iteration > found[1]:
            found = (path, iteration)
    return found


# The advice to a run whose learning rates follow a paper's fixed schedule that diverges or saturates.
FIXED_SCHEDULE_ADVICE = "its learning rates follow a fixed schedule, not lr: start again with another seed"


def resume_advice(
    directory: Path | None,
    steps_per_iteration: int,
    lower_lr: float | None,
    started_at: int = 0,
    retried_lower: bool = True,
    resumed_from: Path | None = None,
) -> str:
    """What to do after a divergence: the finite checkpoint to resume from with `lower_lr` (None: a fixed
    schedule, which a resume would replay), or to start again."""
    if lower_lr is None:
        return FIXED_SCHEDULE_ADVICE
    lower = f"a lower learning rate (lr {lower_lr:g})"
    found = last_finite_checkpoint(directory, steps_per_iteration) if directory is not None else None
    if found is None and resumed_from is not None and started_at > 0:
        found = (resumed_from, started_at)
    if found is None:
        return f"no checkpoint was written before it; start again with {lower}"
    path, iteration = found
    if 0 < started_at and iteration <= started_at and retried_lower:
        return (
            f"it diverged again before writing a checkpoint newer than {path} (step {iteration}), whose "
            f"weights may be beyond recovery: start again with {lower}, or resume it with a still lower one"
        )
    return f"resume from {path} (step {iteration}, all finite) with {lower}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a run's checkpoints whole or not at all (Lightning's writer copies over the previous one); a
    failed write leaves the previous checkpoint and stops the run with one line saying how to continue."""

    def __init__(self, continue_with: str) -> None:
        super().__init__()
        self.continue_with = continue_with

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        try:
            save_torch_atomically(path, checkpoint, shared=False, durable=True)
        except OSError as error:
            raise WriteFailed(
                f"could not write the checkpoint {path} ({describe_error(error)}); free space or make it "
                f"writable, then continue with: {self.continue_with}"
            ) from None
