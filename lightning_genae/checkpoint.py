"""The checkpoint format: Lightning's state plus the run configuration, read without unpickling code.

A checkpoint written by a run holds, beside Lightning's own keys (`state_dict`, `hyper_parameters`,
`global_step`, optimizer and loop state), the run's configuration under CONFIG_KEY as plain values, so
the checkpoint alone can be resumed, re-evaluated or used as an augmenter. Every checkpoint is read with
`weights_only=True`: tensors and plain containers only, so a file handed over by someone else cannot run
code on this machine.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from lightning_genae.cache import is_torch_file, save_torch_atomically
from lightning_genae.datamodules.base import EVALUATION_CONTENT_KEY, EVALUATION_SPLITS, TRAIN_CONTENT_KEY
from lightning_genae.errors import ConfigError, WriteFailed, describe_error
from lightning_genae.progress import say
from lightning_genae.run_files import CONFIG_KEY, PER_INVOCATION, last_checkpoint

if TYPE_CHECKING:
    from lightning_genae.datamodules.base import InMemoryDataModule

Module = TypeVar("Module", bound=pl.LightningModule)


def in_a_run_folder(checkpoint_path: Path) -> bool:
    """Whether the checkpoint lies in a run folder's checkpoints/ (`<run>/checkpoints/x.ckpt`)."""
    return checkpoint_path.absolute().parent.name == "checkpoints"


def run_folder_of(checkpoint_path: Path) -> Path:
    """`<run>/checkpoints/x.ckpt` -> `<run>`; a checkpoint elsewhere -> its folder."""
    parent = checkpoint_path.absolute().parent
    return parent.parent if in_a_run_folder(checkpoint_path) else parent


def pickled_object_refused(error: pickle.UnpicklingError, path: str | Path, flag: str) -> ConfigError:
    """The one line for a file that torch's weights-only reading refused (it would have run code), naming
    what it holds: torch's own message advises loading the file unsafely, which never reaches the user."""
    refused = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f"a pickled {refused.group(1)}" if refused else "a pickled object"
    return ConfigError(
        f"{flag}: {path} holds more than weights and plain values ({what}), refused because loading it "
        "could run code; pick a .ckpt written by a run"
    )


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint file, read once: its path and contents."""

    path: Path
    contents: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, flag: str) -> RunCheckpoint:
        """Read `path` safely; `flag` (`--resume`, `--evaluate`, ...) names the option in errors."""
        path = Path(path)
        if path.is_dir():
            inside = last_checkpoint(path) if (path / "checkpoints").is_dir() else path / "last.ckpt"
            raise ConfigError(f"{flag}: {path} is a folder; pass a checkpoint file such as {inside}")
        if not path.exists():
            raise ConfigError(f"{flag}: checkpoint {path} does not exist; pass an existing .ckpt file")
        if not path.is_file():
            # A named pipe, a device: reading one could wait forever for a writer.
            raise ConfigError(f"{flag}: {path} is not a regular file; pass a .ckpt file written by a run")
        not_readable = f"{flag}: {path} is not a readable checkpoint"
        if not is_torch_file(path):
            # torch.save writes a zip archive (or, before torch 1.6, a pickle led by its magic number);
            # anything else (a plain pickle, damaged bytes) is refused unopened, before torch's loader could
            # advise loading it unsafely.
            raise ConfigError(
                f"{not_readable} (not a file torch.save writes: a plain pickle, another format or damaged "
                "bytes; nothing in it was run); pick a .ckpt written by a run"
            )
        try:
            with warnings.catch_warnings():
                # torch's notes on pickle protocols speak to its developers, not to a user of this program.
                warnings.simplefilter("ignore")
                contents = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - truncated, corrupt or not a torch file: refused alike
            # torch's message on a pickled object advises loading the file unsafely: it never reaches the
            # user; this says what was refused instead.
            if isinstance(error, pickle.UnpicklingError):
                raise pickled_object_refused(error, path, flag) from None
            detail = describe_error(error)
            if "weights_only" in detail:
                detail = ""
            elif "inline_container" in detail:
                # The zip reader's own assertion ("[enforce fail at inline_container.cc:...]") speaks to
                # torch's developers: a zip archive that torch.save did not write, or one cut short.
                detail = " (a zip archive, but not one torch.save wrote whole)"
            else:
                detail = f" ({detail})"
            raise ConfigError(f"{not_readable}{detail}; pick a .ckpt written by a run") from None
        if not isinstance(contents, dict) or "state_dict" not in contents:
            raise ConfigError(f"{flag}: {path} is not a Lightning checkpoint; pick a .ckpt written by a run")
        return cls(path, contents)

    @property
    def run_folder(self) -> Path:
        return run_folder_of(self.path)

    def stored_config(self, flag: str) -> dict[str, Any]:
        """The run configuration saved in the checkpoint, minus what belongs to one invocation.

        A checkpoint without one (written by plain Lightning, or edited) is refused: guessing the model and
        data would only fail later, after a run folder was made.
        """
        stored = self.contents.get(CONFIG_KEY)
        if not isinstance(stored, dict) or not stored:
            raise ConfigError(
                f"{flag}: {self.path} holds no lightning-genae run configuration; pass a checkpoint written "
                "by run.py or by a Trainer given lightning_genae.callbacks_for(...), or load one of another "
                "Trainer with its family's class (e.g. VAEModule.load_from_checkpoint(path))"
            )
        # The training position: without it a resumed run would restart its step count and --evaluate
        # would report step 0.
        step = self.contents.get("global_step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError(
                f"{flag}: {self.path} holds no global_step (the training position); "
                "pass a checkpoint written by run.py"
            )
        # What every run records and everything after reads first: a checkpoint edited or written by
        # another program may lack them, or hold another kind of value.
        unnamed = [key for key in ("model", "data") if not (isinstance(stored.get(key), str) and stored[key])]
        if unnamed:
            raise ConfigError(
                f"{flag}: {self.path} holds a run configuration without its {' and '.join(unnamed)} name; "
                "pass a checkpoint written by run.py"
            )
        stored = dict(stored)
        for key in PER_INVOCATION:
            stored.pop(key, None)
        if stored.get("logger") == []:
            # Recorded by runs that took an empty list as CSV alone, which is what it meant.
            stored["logger"] = ["csv"]
        return stored

    def training_data_sha256(self) -> str | None:
        """The SHA-256 of the training split the run was trained on, or None if the checkpoint records none.

        Lightning saves the datamodule's state under the datamodule's class name (a dataset's, or the
        augmentation wrapper's), so it is looked up by what it holds.
        """
        for value in self.contents.values():
            if isinstance(value, dict) and isinstance(value.get(TRAIN_CONTENT_KEY), str):
                return value[TRAIN_CONTENT_KEY]
        return None

    def check_trained_on(
        self, datamodule: InMemoryDataModule, flag: str, otherwise: str, data_dir: str | None = None
    ) -> None:
        """Refuse data whose training, validation or test split differs by content from the run's: files
        replaced in place under the same --data-dir, or another folder given as --data-dir, are found, not
        mixed into one run or reported as its numbers. `otherwise` ends the error with the other way out.
        `data_dir`: the folder read now, where it may differ from the run's; without a hash to compare, only
        the run's own folder is accepted."""
        trained = self.training_data_sha256()
        stored = self.contents.get(CONFIG_KEY)
        stored_dir = stored.get("data_dir") if isinstance(stored, dict) else None
        if stored_dir is not None and not isinstance(stored_dir, str):
            raise ConfigError(
                f"{flag} {self.path}: the run configuration it records gives data_dir {stored_dir!r}, no "
                "folder's path; the file is damaged or was not written by a run: pick a .ckpt written by one"
            )
        moved = data_dir and stored_dir and Path(data_dir).resolve() != Path(stored_dir).resolve()
        if trained is None and moved:
            raise ConfigError(
                f"{flag} {self.path}: the checkpoint records no hash of its training data (an older "
                f"version), so data read from --data-dir {data_dir} cannot be checked against the run's; "
                f"give the run's own --data-dir {stored_dir}, or {otherwise}"
            )
        if trained is None:
            say(
                f"{flag}: {self.path} records no hash of its training data (an older version), so it "
                "could not be compared with this data"
            )
            return
        current = datamodule.content_sha256("train")
        if trained != current:
            raise self._other_data("training", datamodule, trained, current, flag, otherwise)
        self._check_evaluation_splits(datamodule, flag, otherwise)

    def _check_evaluation_splits(self, datamodule: InMemoryDataModule, flag: str, otherwise: str) -> None:
        """The validation and test splits against the hashes the checkpoint holds (none in one written by
        an older version, which is not compared): the run's numbers are measured on them."""
        recorded = next(
            (
                value[EVALUATION_CONTENT_KEY]
                for value in self.contents.values()
                if isinstance(value, dict) and isinstance(value.get(EVALUATION_CONTENT_KEY), dict)
            ),
            {},
        )
        for split in EVALUATION_SPLITS:
            saved = recorded.get(split)
            if isinstance(saved, str) and saved != (current := datamodule.content_sha256(split)):
                raise self._other_data(split, datamodule, saved, current, flag, otherwise)

    def _other_data(
        self, split: str, datamodule: InMemoryDataModule, saved: str, current: str, flag: str, otherwise: str
    ) -> ConfigError:
        return ConfigError(
            f"{flag} {self.path}: the {split} {datamodule.item_noun} differ from the run's (SHA-256 "
            f"{saved[:12]} in the checkpoint, {current[:12]} now: were the files under --data-dir replaced, "
            "or does this version of lightning-genae read them otherwise than the run's?); restore the run's "
            f"data (or version), {datamodule.reading_advice()}or {otherwise}"
        )

    def iteration(self, steps_per_iteration: int) -> int:
        """Training iterations done when it was saved (Lightning counts optimizer steps)."""
        return int(self.contents.get("global_step", 0)) // steps_per_iteration

    def epochs(self) -> int:
        """Training epochs done when it was saved: those whose last batch had run (Lightning's count, which
        ends a --max-epochs fit; a checkpoint of another writer than Lightning's fit counts 0)."""
        try:
            progress = self.contents["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        except (KeyError, TypeError):
            return 0
        return int(progress) if isinstance(progress, int) else 0

    def restore(self, module_type: type[Module], flag: str) -> Module:
        """The module, built from the checkpoint's hyper-parameters and weights (in eval mode, on the CPU)."""
        hyper_parameters = self.contents.get("hyper_parameters")
        if not isinstance(hyper_parameters, dict):
            raise ConfigError(
                f"{flag}: {self.path} holds no hyper-parameters to rebuild the model from; "
                "pick a .ckpt written by run.py"
            )
        try:
            module = module_type(**hyper_parameters)
        except (TypeError, RuntimeError, ConfigError) as error:
            raise self._unfit(module_type.__name__, describe_error(error), flag) from None
        self.check_fits(module, flag)
        try:
            module.load_state_dict(self.contents["state_dict"])
        except RuntimeError as error:  # a dtype or a module's own check: the same one line
            raise self._unfit(module_type.__name__, describe_error(error), flag) from None
        return module.eval()

    def check_fits(self, module: torch.nn.Module, flag: str, *, training: bool = False) -> None:
        """Refuse, with one line, weights that do not fit `module` (names, shapes) or that hold NaN or inf.

        `training`: the optimizer states are checked too (a resume continues from them).

        Every way a checkpoint is used (--resume, --evaluate, --augment-ckpt) checks this before its weights
        are loaded: a mismatch would otherwise surface as a traceback from deep inside the load, and NaN
        weights as a failure far from their cause (a divergence report, a scikit-learn error).
        """
        state = self.contents.get("state_dict")
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise self._unfit(type(module).__name__, "its state_dict is not a mapping of tensors", flag)
        problem = state_dict_mismatch(module.state_dict(), state)
        if problem is not None:
            raise self._unfit(type(module).__name__, problem, flag)
        if training:
            self._check_training_state(flag)
            self._check_optimizer_states(module, flag)
        bad = non_finite_state(self.contents if training else {"state_dict": state})
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise ConfigError(
                f"{flag}: {self.path} holds NaN or inf values ({shown}); pick a checkpoint whose weights "
                "are finite, such as an earlier one of the same run"
            )

    def _check_training_state(self, flag: str) -> None:
        """Refuse a checkpoint whose training state (Lightning's loops, callbacks, schedulers) is not of the
        kind Lightning restores: a damaged file met there gives a TypeError traceback from the restore."""
        kinds: dict[str, tuple[type, str]] = {
            "loops": (Mapping, "a mapping"),
            "callbacks": (Mapping, "a mapping"),
            "lr_schedulers": (list, "a list"),
            "optimizer_states": (list, "a list"),
        }
        for key, (kind, described) in kinds.items():
            if key in self.contents and not isinstance(self.contents[key], kind):
                raise ConfigError(
                    f"{flag}: {self.path} holds a damaged training state ({key} is a "
                    f"{type(self.contents[key]).__name__}, not {described}), so training cannot continue "
                    "from it; resume from another checkpoint of the run, or score it with --evaluate"
                )

    def _check_optimizer_states(self, module: torch.nn.Module, flag: str) -> None:
        """Refuse a checkpoint whose optimizer states do not cover the module's parameters: a weights-only
        save (Lightning's `save_weights_only`) holds none, which Lightning's restore meets with a KeyError
        traceback, or with an empty list by going on with fresh optimizers, which is no continuation. Every
        family optimizes each of its trainable parameters, so the states' parameter groups list at least as
        many parameters as the module trains."""
        states = self.contents.get("optimizer_states")
        groups = [
            group
            for state in (states if isinstance(states, list) else [])
            if isinstance(state, Mapping) and isinstance(state.get("param_groups"), list)
            for group in state["param_groups"]
        ]
        listed = sum(len(group.get("params", ())) for group in groups if isinstance(group, Mapping))
        # The trained ones: a frozen copy (a generator's exponential moving average) has no optimizer state.
        expected = sum(1 for parameter in module.parameters() if parameter.requires_grad)
        if listed < expected:
            what = (
                f"optimizer states for {listed} of its {expected} weights" if groups else "no optimizer state"
            )
            raise ConfigError(
                f"{flag}: {self.path} holds {what} (saved with its weights only?), so training cannot "
                "continue where it stopped; score it with --evaluate, or start a new run"
            )

    def _unfit(self, name: str, detail: str, flag: str) -> ConfigError:
        return ConfigError(
            f"{flag}: {self.path} does not hold a {name} of this version ({detail}); "
            "pick a checkpoint written by this model family"
        )


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str | None:
    """What keeps `given` from loading in place of `expected` (missing, unexpected, reshaped), or None."""

    def listed(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    reshaped = [
        f"{name} {tuple(given[name].shape)} where the model has {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in given and tuple(given[name].shape) != tuple(tensor.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(expected)} weights missing: {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {listed(unexpected)}")
    if reshaped:
        problems.append(f"shapes differ: {listed(reshaped)}")
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
    """Names of the weights, buffers and optimizer-state tensors of a checkpoint that hold NaN or inf.

    The flags of all tensors on one device are gathered before they are read: one device sync per
    device, however many tensors the model has.
    """
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
    """(path, iteration) of the newest readable checkpoint in `directory` whose state is all finite.

    `last.ckpt` is preferred over another file of the same iteration, as the one `--resume last` takes.
    """
    found: tuple[Path, int] | None = None
    for path in sorted(directory.glob("*.ckpt"), key=lambda path: (path.name != "last.ckpt", path.name)):
        try:
            checkpoint = RunCheckpoint.load(path, "--resume")
        except ConfigError:
            continue  # unreadable or not a checkpoint: nothing to resume from
        if non_finite_state(checkpoint.contents):
            continue
        iteration = checkpoint.iteration(steps_per_iteration)
        if found is None or iteration > found[1]:
            found = (path, iteration)
    return found


# What a run whose learning rates follow a paper's fixed schedule (which --lr does not set) is advised when
# it diverges (`resume_advice`) or its discriminator saturates (run_report's collapse_warning).
FIXED_SCHEDULE_ADVICE = (
    "its learning rates follow a fixed schedule, not --lr: start again with another --seed (and --overwrite, "
    "as the run's folder holds this run)"
)


def resume_advice(
    directory: Path | None,
    steps_per_iteration: int,
    lower_lr: float | None,
    started_at: int = 0,
    retried_lower: bool = True,
    resumed_from: Path | None = None,
) -> str:
    """What to do after a divergence: the finite checkpoint to resume from, or that there is none.

    `lower_lr`: the learning rate to retry with; None where the run's learning rate follows a fixed schedule
    (a resume would replay the same updates), so starting again with another seed is all there is to advise.

    A run resumed at iteration `started_at` that diverged before writing a newer checkpoint may have
    resumed from weights already too large to recover (after one Adam step at --lr 1e6 every weight is
    about 1e6, finite, and the next forward pass overflows whatever the learning rate): advising the same
    checkpoint again could go round in circles, so starting again is advised first. That holds where the
    resume already lowered the learning rate (`retried_lower`); a resume at the checkpoint's rate or above
    that diverges is advised that checkpoint with a lower one. `resumed_from`: the checkpoint the run
    resumed from, named where `directory` holds none (a resume into a folder of its own).
    """
    if lower_lr is None:
        return FIXED_SCHEDULE_ADVICE
    found = last_finite_checkpoint(directory, steps_per_iteration) if directory is not None else None
    if found is None and resumed_from is not None and started_at > 0:
        # Resumed into another folder (--output NEW), which holds no checkpoint yet: the one it resumed from.
        found = (resumed_from, started_at)
    if found is None:
        # The run's folder holds the diverged run (config.yaml): starting again into it needs --overwrite.
        return (
            f"no checkpoint was written before it; start again with a lower --lr and --overwrite, e.g. "
            f"--lr {lower_lr:g} --overwrite"
        )
    path, iteration = found
    if 0 < started_at and iteration <= started_at and retried_lower:
        return (
            f"it diverged again before writing a checkpoint newer than {path} (step {iteration}), whose "
            f"weights may be beyond recovery: start again with a lower --lr and --overwrite, e.g. --lr "
            f"{lower_lr:g} --overwrite, or "
            f"resume it with a still lower one: --resume {path} --lr {lower_lr:g}"
        )
    return (
        f"resume from {path} (step {iteration}, all finite) with a lower --lr: "
        f"--resume {path} --lr {lower_lr:g}"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a run's checkpoints whole or not at all: each into a temporary file beside it, synced to disk
    and renamed over it, with the permissions the user's umask gives a new file.

    Lightning's own writer stages the file in the system's temporary folder and moves it into place, which
    between two filesystems (a node-local /tmp, the run on shared storage) is a copy over the previous
    checkpoint: a kill or a full disk during that copy leaves a truncated last.ckpt and no run to resume. A
    write that fails here (a full disk, a quota, a read-only folder) leaves the previous checkpoint as it
    was and stops the run with one line saying how to continue.
    """

    def __init__(self, continue_with: str) -> None:
        super().__init__()
        self.continue_with = continue_with

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        try:
            save_torch_atomically(path, checkpoint, shared=False, durable=True)
        except OSError as error:
            raise WriteFailed(
                f"could not write the checkpoint {path} ({describe_error(error)}); the run stopped with its "
                f"earlier checkpoints as they were: free space there or make the folder writable, then "
                f"continue with: {self.continue_with}"
            ) from None
