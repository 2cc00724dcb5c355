"""What every model family shares: its typed options (`options.py`), step counting, logging and the
divergence watch. Tools never look at a model's class: they ask for the contracts in `protocols.py`."""

from __future__ import annotations

import contextlib
import functools
import operator
import pickle
import typing
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import Tensor, nn

from lightning_genae.datamodules.placement import host_to_device
from lightning_genae.errors import ConfigError, TrainingDiverged, describe_error
from lightning_genae.lightning_internals import (
    log_global_value,
    record_training_values,
    restore_loader_positions,
    restricted_classmethod,
    should_update_logs,
    uncount_epoch_cut_short,
)
from lightning_genae.models.batch import check_data
from lightning_genae.models.options import FamilyOptions
from lightning_genae.source import current_source


def set_sgd_rate(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """Set an SGD optimizer's learning rate and momentum for its next step, keeping the velocity in step
    units as the papers' rule does (torch's is in gradient units): its buffers are rescaled by old / new."""
    for group in optimizer.param_groups:
        if group["lr"] != lr:
            for param in group["params"]:
                buffer = optimizer.state[param].get("momentum_buffer")
                if buffer is not None:
                    buffer.mul_(group["lr"] / lr)
        group["lr"], group["momentum"] = lr, momentum


def adam(
    parameters: Iterable[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where torch has one for the parameters' device (four times
    faster for the DCGAN pair on a CPU; bench/overhead.py). Called after Lightning moved the model."""
    parameters = list(parameters)
    fusable = torch.utils._foreach_utils._get_fused_kernels_supported_devices()
    fused = bool(parameters) and all(
        param.device.type in fusable and param.is_floating_point() for param in parameters
    )
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=fused or None)


class LoggedTraining(NamedTuple):
    """The last training batch whose values were logged (0-based iteration), and whether they were written
    at its end (if not, the run writes them from `trainer.callback_metrics`)."""

    iteration: int
    written: bool


def is_last_training_batch(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether fit ends after this training batch (max_steps, or the last batch of the last epoch),
    called in on_train_batch_end: its values are the run's final ones, which the run writes itself."""
    if trainer.should_stop or (0 < trainer.max_steps <= trainer.global_step):
        return True
    max_epochs = trainer.max_epochs
    return (
        max_epochs is not None
        and max_epochs >= 0
        and trainer.current_epoch + 1 >= max_epochs
        and batch_idx + 1 >= trainer.num_training_batches
    )


# Losses noted by `watch_losses` before it checks them itself: bounds the memory of a module trained
# without the divergence guard, which checks far more often.
MAX_UNCHECKED_LOSSES = 1024


Method = TypeVar("Method", bound=Callable[..., Tensor])


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """The module in eval mode without gradients, each submodule's own mode restored after (in training mode
    batch norm would make an image depend on the others drawn with it)."""
    modes = [(part, part.training) for part in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for part, training in modes:
            part.training = training


def inference(method: Method) -> Method:
    """A module's method run in `evaluation_mode` (`sample`, `reconstruct`; `encode` and `decode` keep
    gradients, training is built on them). `reconstruct`'s input is checked first (`check_data`)."""

    @functools.wraps(method)
    def in_evaluation_mode(module: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        if isinstance(module, GenerativeModule) and method.__name__ == "reconstruct":
            given = args[0] if args else next(iter(kwargs.values()), None)
            what = f"{type(module).__name__}.reconstruct's input"
            check_data(given, module.data_kind, module.data_shape, warn_scale=False, what=what)
        with evaluation_mode(module):
            return method(module, *args, **kwargs)

    return typing.cast(Method, in_evaluation_mode)


# Where a checkpoint records its family's `objective_form`, and the commit of the code that wrote it.
OBJECTIVE_FORM_KEY = "genae_objective_form"
SOURCE_KEY = "genae_source"
# Why a loss that is not finite at the first iteration is no learning rate's doing, and where to look.
BEFORE_ANY_UPDATE = "no learning rate is the cause; look at the model's forward pass and loss on this data"


def diverged_before_any_update(cause: str) -> bool:
    """Whether `first_non_finite_loss`'s cause is the run's first loss, which no lower learning rate helps."""
    return BEFORE_ANY_UPDATE in cause


class GenerativeModule(pl.LightningModule):
    """Base LightningModule: batches are (data, labels), images [B,C,H,W] floats in [-1, 1]; its
    hyperparameters (the data's shape, its options) rebuild it: `Family(**checkpoint["hyper_parameters"])`."""

    options_type: ClassVar[type[FamilyOptions]] = FamilyOptions
    # The data the family models; `resolve` checks it against the dataset's own `data_kind`.
    data_kind: ClassVar[str] = "image"
    # The keyword the family's constructor takes the data's shape under, saved in its hyper-parameters.
    shape_key: ClassVar[str] = "image_shape"
    # The option that sizes the family's networks (what `--augmenter-width` sets for an augmenter).
    width_option: ClassVar[str] = "width"

    # Lightning's global_step counts optimizer.step() calls; a GAN makes two per training iteration.
    optimizer_steps_per_iteration: ClassVar[int] = 1
    # Adversarial models toggle one network off per backward, which DDP must be told about.
    adversarial: ClassVar[bool] = False
    # Headline validation metric that picks the best checkpoint (a GAN's is set per run, a generative one).
    monitor: str | None = "val/loss"
    # Why the image metrics were left out of a run that would compute them, for the run's record.
    image_metrics_skipped: str | None = None

    @restricted_classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's loader, reading weights and plain values only unless given `weights_only=False`: a
        file holding more is refused in one line. `lightning_genae.load_model(path)` picks the family."""
        if kwargs.setdefault("weights_only", True) is False:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except pickle.UnpicklingError as error:
            # The object named, not torch's advice to load the file unsafely.
            raise ConfigError(
                f"load_from_checkpoint: {checkpoint_path} is refused ({describe_error(error)})"
            ) from None

    def items_needed_per_batch(self) -> tuple[int, str] | None:
        """(the fewest items a training batch on one device needs, the part of the family that needs them,
        as a noun phrase) where its loss compares items of a batch; None where one item is enough."""
        return None

    def __init__(self, image_shape: tuple[int, ...] | list[int], **options: Any) -> None:
        """`image_shape`: one item's (C, H, W) (a series family's `series_shape`: (T, C)); options by name."""
        super().__init__()
        # Plain ints: a checkpoint's hyper-parameters are read back with weights_only, which refuses numpy's.
        self.data_shape = tuple(operator.index(d) for d in image_shape)
        if self.data_kind == "image":
            self.image_shape = self.data_shape
        self.options = self.options_type.parse(options)
        self.latent_dim = self.options.latent_dim
        self.save_hyperparameters(
            {self.shape_key: list(self.data_shape), **self.options.to_dict()}, logger=False
        )
        # (loss name, iteration, value) noted by `watch_losses`, not yet checked.
        self._unchecked_losses: list[tuple[str, int, Tensor]] = []
        # This training batch's values, recorded at its end only if they will be written or are the last.
        self._training_values: list[tuple[Mapping[str, Tensor | float], bool]] = []
        self.last_logged_training: LoggedTraining | None = None
        # The loops ("train", "validation", "test") whose first batch passed `check_data`.
        self._checked_loops: set[str] = set()
        # This evaluation pass's sums (value x items, items) per name; the names in the progress bar.
        self._split_sums: dict[str, tuple[Tensor, int]] = {}
        self._split_prog_bar: set[str] = set()

    def lower_learning_rate(self) -> float | None:
        """The learning rate a diverged run is advised to retry with: a tenth of `lr`, or the family's default
        where lower still; None where a fixed schedule sets the rate (the options leave `lr` unread)."""
        if "lr" in self.options.unread():
            return None
        default = type(self.options).__dataclass_fields__["lr"].default
        tenth = self.options.lr / 10
        return default if isinstance(default, float) and default < tenth else tenth

    @property
    def iteration(self) -> int:
        """Training iterations done so far (one D and one G update count as one for a GAN)."""
        if self._trainer is None:
            return 0
        return self.trainer.global_step // self.optimizer_steps_per_iteration

    @property
    def iteration_epoch(self) -> int:
        """The current iteration's epoch (from 0), counted from it so a resume keeps an epoch schedule."""
        return self.iteration // max(1, int(self.trainer.num_training_batches))

    def log_training(self, values: Mapping[str, Tensor | float], prog_bar: bool = False) -> None:
        """Log this training batch's values (0-dim tensors, never `.item()`; they are detached and copied):
        they are recorded at the batch's end, and only when they will be written (`on_train_batch_end`)."""
        self._training_values.append((values, prog_bar))

    def _check_first_batch(self, loop: str, batch: Any) -> None:
        # Each loop's first batch only (each loop has a loader of its own), so the check costs nothing after.
        if loop not in self._checked_loops:
            data, _ = batch
            check_data(data, self.data_kind, self.data_shape, not self._checked_loops, "the batch's data")
            self._checked_loops.add(loop)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._check_first_batch("train", batch)

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._check_first_batch("validation", batch)

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._check_first_batch("test", batch)

    def _take_rank_zero_buffers(self) -> None:
        """Under DDP, every rank's buffers (batch norm's running statistics) become rank 0's, which its
        checkpoint holds: each rank's own batches moved them within the last step."""
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return
        for buffer in self.buffers():
            torch.distributed.broadcast(buffer, src=0)

    on_validation_start = on_test_start = _take_rank_zero_buffers

    def on_fit_start(self) -> None:
        # Metric states left as inference tensors by a prior validate/test can't update in place: remade here.
        for module in self.modules():
            if isinstance(module, torchmetrics.Metric):
                module.reset()

    def on_train_start(self) -> None:
        # Values queued by a batch that raised before its end (a fit stopped by an exception) are dropped.
        self._training_values = []
        self.last_logged_training = None
        restore_loader_positions(self.trainer)

    def training_pixel_means(self) -> Tensor:
        """Each pixel's mean [C, H, W] in [0, 1] over the training split of the fit's lightning_genae data."""
        datamodule = self.trainer.datamodule
        # Summed exactly in int64 by blocks: a float64 copy of the split is 8x its size (330 MB for MNIST).
        total = sum(
            block.sum(0, dtype=torch.int64)
            for images, _ in datamodule.split_batches("train")
            for block in images.split(4096)
        )
        return total.double() / (datamodule.split_size("train") * 255)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After every callback's on_train_batch_end, so a stop they asked for counts. The row is written
        # where and when Lightning writes logged values, without `self.log`'s result collection.
        queued, self._training_values = self._training_values, []
        written = should_update_logs(self.trainer) or bool(self.trainer.fast_dev_run)
        if not (written or is_last_training_batch(self.trainer, batch_idx)):
            # Skipped: recording costs Python work per value and its values would be written nowhere.
            return
        values: dict[str, Tensor | float] = {}
        progress_bar: list[str] = []
        for batch_values, prog_bar in queued:
            values.update(batch_values)
            if prog_bar:
                progress_bar += batch_values
        record_training_values(self.trainer, values, progress_bar, write=written)
        self.last_logged_training = LoggedTraining(self.iteration - 1, written)

    def log_split_means(
        self, values: Mapping[str, Tensor], items: int, prog_bar: Collection[str] = ()
    ) -> None:
        """Add one evaluation batch's values (each a mean over its `items`) to the split's means, logged at
        the pass's end over every item of every process (Lightning's is not, for unequal shares)."""
        for name, value in values.items():
            total, count = self._split_sums.get(name, (0.0, 0))
            self._split_sums[name] = (value.detach().float() * items + total, count + items)
        self._split_prog_bar.update(prog_bar)

    def _end_evaluation(self) -> None:
        sums, self._split_sums = self._split_sums, {}
        prog_bar, self._split_prog_bar = self._split_prog_bar, set()
        if sums:
            # Every process evaluated at least one batch, so all hold the same names; sorted, they line up.
            names = sorted(sums)
            totals = torch.stack([sums[name][0] for name in names])
            counts = torch.tensor([float(sums[name][1]) for name in names], device=totals.device)
            if self.trainer.world_size > 1:
                totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
                counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            for name, mean in zip(names, totals / counts, strict=True):
                log_global_value(self, name, mean, on_step=False, on_epoch=True, prog_bar=name in prog_bar)
        # "step" is the training iterations done, not Lightning's index of the batch before the evaluation.
        log_global_value(self, "step", float(self.iteration), on_step=False, on_epoch=True)

    on_validation_epoch_end = on_test_epoch_end = _end_evaluation

    def sampling(self) -> str | None:
        """How `sample` draws its latents, when that is not plainly the family's prior (said in the run)."""
        return None

    def objective_form(self) -> str | None:
        """The form of the training objective where checkpoints may have been trained under another (None
        where there is one); a checkpoint records it, and a resume under another says so."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._trainer is not None:
            uncount_epoch_cut_short(self.trainer, checkpoint)
        form = self.objective_form()
        if form is not None:
            checkpoint[OBJECTIVE_FORM_KEY] = form
        source = current_source()
        if source is not None:
            checkpoint[SOURCE_KEY] = source

    def draw_prior(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """n latents from the prior on `device`: standard normal; a family with another prior overrides it."""
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The prior's latents of the weights' dtype, drawn on the CPU so a seeded generator reproduces."""
        weights = next(self.parameters(), None)
        dtype = torch.float32 if weights is None else weights.dtype
        noise = self.draw_prior(n, generator, torch.device("cpu")).to(dtype)
        return host_to_device(noise, self.device)

    def watch_losses(self, **losses: Tensor) -> None:
        """Note this step's losses for `first_non_finite_loss`, which the divergence guard checks at its
        cadence (reading them here would sync every iteration); past MAX_UNCHECKED_LOSSES, checked here."""
        iteration = self.iteration
        self._unchecked_losses.extend((name, iteration, value.detach()) for name, value in losses.items())
        if len(self._unchecked_losses) >= MAX_UNCHECKED_LOSSES:
            diverged = self.first_non_finite_loss()
            if diverged is not None:
                raise TrainingDiverged(
                    diverged if diverged_before_any_update(diverged) else f"{diverged}; lower lr"
                )

    def manual_update(self, optimizer: Any, name: str, loss: Tensor, backward: Tensor | None = None) -> None:
        """Note `loss` as `name` (`watch_losses`), then step `optimizer` on `backward` (default `loss`)."""
        self.watch_losses(**{name: loss})
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss if backward is None else backward)
        optimizer.step()

    def first_non_finite_loss(self) -> str | None:
        """`<loss> became <value> at step <i>` for the first NaN/inf loss noted since the last check, else
        None; forgets the noted losses. One device sync, however many losses were noted."""
        unchecked, self._unchecked_losses = self._unchecked_losses, []
        if not unchecked or bool(
            torch.isfinite(torch.cat([value.reshape(-1) for *_, value in unchecked])).all()
        ):
            return None
        entry = next(entry for entry in unchecked if not torch.isfinite(entry[2]).all())
        name, iteration, value = entry
        cause = f"{name} became {value.float().mean().item()} at step {iteration}"
        if iteration == 0 and entry is unchecked[0]:
            # The run's first loss, noted before the first optimizer step: computed at the weights as built.
            cause += f", before any update: {BEFORE_ANY_UPDATE}"
        return cause


class ObjectiveModule(GenerativeModule):
    """A family whose `model_step` logs a stage's losses and metrics: validation and test run it, and so does
    training by automatic optimization (ae, vae, rae) unless the family steps its optimizers itself."""

    @abstractmethod
    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor | None:
        """Log the stage's losses and metrics; return the loss to minimise (None: the family's own steps)."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.model_step(batch, "train")
        self.watch_losses(**{"train/loss": loss})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "test")
