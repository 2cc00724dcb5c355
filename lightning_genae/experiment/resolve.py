"""`resolve(config) -> ResolvedRun`: every option checked against its owner and every default filled, once.

Its result is what a run, `--evaluate`, a grid cell and `--print-config` use and `config.yaml` records;
resolving it again gives it back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_genae.augmentation import (
    AugmentPlan,
    augmentation_options,
)
from lightning_genae.datamodules import (
    DATASETS,
    build_datamodule,
    dataset_options,
    parse_dataset_options,
)
from lightning_genae.errors import PLUGIN_HINT, ConfigError, agree, describe_error
from lightning_genae.experiment.augment_plan import resolve_augment_plan
from lightning_genae.experiment.config import (
    LOGGER_CHOICES,
    NO_BACKBONE,
    RunConfig,
    device_count,
    flag,
)
from lightning_genae.experiment.input_files import check_classifier_weights, check_inception_weights
from lightning_genae.models import MODELS, FamilyOptions, ModelSpec
from lightning_genae.plugin_options import AUTO, PluginOptions, did_you_mean

if TYPE_CHECKING:
    # Only named in annotations: resolving a configuration imports neither Lightning nor a family's module.
    from lightning_genae.datamodules import InMemoryDataModule
    from lightning_genae.experiment.attach import Attached
    from lightning_genae.models import DiscriminatorAugmentation, GenerativeModule
    from lightning_genae.models.protocols import StrengthController

# Training length when neither --max-steps nor --max-epochs is given, in training iterations.
DEFAULT_MAX_STEPS = 2000


def model_option_names() -> set[str]:
    """Every option some registered family takes."""
    return {name for spec in MODELS.values() for name in spec.options.types()}


@dataclass(frozen=True)
class ResolvedRun:
    """A checked configuration with every default filled in, and what it stands for."""

    config: RunConfig
    model: ModelSpec
    options: FamilyOptions
    augment: AugmentPlan
    # The dataset's own options (`--image-size`, `--seq-len`, ...), as its DataModule takes them.
    data_options: PluginOptions

    def build_datamodule(self) -> InMemoryDataModule:
        """The run's DataModule; `--evaluate` rebuilds the same one from a checkpoint's configuration."""
        config = self.config
        return build_datamodule(
            config.data,
            data_dir=config.data_dir,
            batch_size=config.batch_size,
            train_size=config.train_size,
            seed=config.seed,
            num_workers=config.num_workers,
            data_on_device=config.data_on_device,
            **self.data_options.to_dict(),
        )

    def build_model(
        self,
        data_shape: tuple[int, ...],
        discriminator_augmentation: DiscriminatorAugmentation | None = None,
        adaptive_strength: StrengthController | None = None,
    ) -> GenerativeModule:
        """The family's module, given the discriminator-side augmentation and ADA's controller when the run
        has them."""
        extra: dict[str, Any] = {}
        if discriminator_augmentation:
            extra["discriminator_augmentation"] = discriminator_augmentation
        if adaptive_strength is not None:
            extra["adaptive_strength"] = adaptive_strength
        try:
            return self.model.module(data_shape, **extra, **self.options.to_dict())
        except (torch.OutOfMemoryError, RuntimeError) as error:
            raise memory_refusal(error, f"--model {self.config.model}", self.options.to_dict()) from None

    def attach_augmentation(self, datamodule: InMemoryDataModule, **arguments: Any) -> Attached:
        """`attach.attach_augmentation` of this run's plan; one too large for memory is one line."""
        # Imported here: it imports Lightning, which `--help` and a configuration error never need.
        from lightning_genae.experiment.attach import attach_augmentation

        try:
            return attach_augmentation(self.augment, datamodule, **arguments)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            raise memory_refusal(error, f"--augment {self.config.augment}", self.augment.options) from None

    def check_batch_for(self, model: nn.Module, world_size: int) -> None:
        """Batch norm in training needs two items per device to normalise over, and so does a loss that
        compares a batch's items (`items_needed_per_batch`); fewer crash mid-step."""
        per_device = self.config.batch_size // world_size
        refuse_a_share_that_replaces_nothing(self.augment, per_device, world_size)
        batch_norm = any(isinstance(module, _BatchNorm) for module in model.modules())
        needs = [(2, "batch norm")] if batch_norm else []
        own = getattr(model, "items_needed_per_batch", lambda: None)()
        if own is not None:
            needs.append(own)
        for needed, what in needs:
            if per_device < needed:
                spread = f" across {world_size} devices" if world_size > 1 else ""
                items = agree(range(per_device), "item", "items")
                raise ConfigError(
                    f"--batch-size {self.config.batch_size}{spread} leaves {per_device} {items} per device, "
                    f"and --model {self.config.model}'s {what} needs at least {needed}; use --batch-size "
                    f"{needed * world_size} or more"
                )

    def total_iterations(self, num_train_images: int) -> int:
        """The run's length in training iterations (epochs of full batches when budgeted in epochs)."""
        if self.config.max_steps:
            return self.config.max_steps
        assert self.config.max_epochs is not None
        return self.config.max_epochs * (num_train_images // self.config.batch_size)


def _family_options(config: RunConfig, model: ModelSpec, named: Collection[str] = ()) -> FamilyOptions:
    """The family's options from what was given; an option of another family, or of none, is an error, and
    so is one these options leave unread (`named`: those the command line names, refused at any value)."""
    own = set(model.options.types())
    others = set(augmentation_options()) | set(dataset_options())
    given = {name: value for name, value in config.plugin_options.items() if name not in others}
    # A stored None is an option left to its owner's default: no plug-in is needed for it.
    unknown = sorted(name for name in set(given) - model_option_names() if given[name] is not None)
    if unknown:
        raise ConfigError(
            f"unknown {agree(unknown, 'option', 'options')} {', '.join(unknown)}; "
            f"valid options are listed by --help {PLUGIN_HINT}"
        )
    foreign = sorted(name for name in set(given) - own if given[name] is not None)
    if foreign:
        raise ConfigError(
            f"{', '.join(map(flag, foreign))} {agree(foreign, 'does', 'do')} not apply to --model "
            f"{config.model}; drop {agree(foreign, 'it', 'them')} or pick a model that takes "
            f"{agree(foreign, 'it', 'them')}"
        )
    return model.options.parse(
        {name: value for name, value in given.items() if name in own and value is not None}, given=named
    )


def named_options(command_line: Mapping[str, Any]) -> frozenset[str]:
    """The options the command line names, refused even at their default where the run leaves them unread;
    a switch turned off (`--no-aae-supervised`) asks for nothing."""
    return frozenset(name for name, value in command_line.items() if value is not False)


def _check_data_kind(config: RunConfig, model: ModelSpec) -> None:
    """The model must fit the kind of data (images, series); the augmentation is judged with its plan."""
    kind = DATASETS[config.data].data_kind
    same_kind = [name for name, spec in DATASETS.items() if spec.data_kind == model.data_kind]
    if model.data_kind != kind:
        fitting = [name for name, spec in MODELS.items() if spec.data_kind == kind]
        raise ConfigError(
            f"--model {config.model} models {model.data_kind} data and --data {config.data} is "
            f"{kind} data; use --data {' or '.join(same_kind)}, or --model {' or '.join(fitting)}"
        )


def _refuse_a_likelihood_of_grey_pixels(config: RunConfig, options: FamilyOptions) -> None:
    """`--nll-samples` on grey levels: a Bernoulli decoder's score of pixels between 0 and 1 is no
    likelihood, and would sit beside the literature's binarized-MNIST figures without being one."""
    if not getattr(options, "nll_samples", 0) or DATASETS[config.data].binary_pixels:
        return
    binary = [name for name, spec in DATASETS.items() if spec.binary_pixels]
    raise ConfigError(
        f"--nll-samples estimates the likelihood of binary pixels, and --data {config.data} has grey levels, "
        f"where a Bernoulli decoder's score is no likelihood; use --data {' or '.join(binary)}, or drop "
        "--nll-samples"
    )


def _refuse_series_backbone(config: RunConfig) -> None:
    """Series are scored in their own classifier's features (where the dataset ships one), or not at all."""
    kind = DATASETS[config.data].data_kind
    if kind != "image" and config.backbone == "inception":
        raise ConfigError(
            f"--backbone inception scores images, and --data {config.data} is {kind} data; drop --backbone "
            "(or --backbone none to leave out the feature metrics of a dataset with a series classifier)"
        )


def refuse_named_but_unread(resolved: ResolvedRun, named: Collection[str]) -> None:
    """What `resolve(..., named=named)` refuses of the options typed now, for a run resolved without them (a
    grid's cells): a dataset option its other settings leave unread."""
    config = resolved.config
    parse_dataset_options(config.data, config.given_plugin_options(dataset_options()), named=named)


def _refuse_feature_options_without_metrics(
    config: RunConfig, model: ModelSpec, named: Collection[str]
) -> None:
    """A family that does not generate computes no image metric: a backbone asked for, or its weights, would
    be recorded as the run's without ever being read. (`--eval-samples`, which scripts give every family of
    a comparison alike, is left unread.)"""
    if model.generates:
        return
    typed_backbone = "backbone" in named and config.backbone != NO_BACKBONE
    given = [f"--backbone {config.backbone}"] * typed_backbone + [
        flag(name) for name in ("classifier_weights", "inception_weights") if getattr(config, name)
    ]
    if given:
        flags = " and ".join(option.split()[0] for option in given)
        raise ConfigError(
            f"{' and '.join(given)} {agree(given, 'gives', 'give')} the generative image metrics' features, "
            f"and --model {config.model} does not generate (it is scored by its reconstructions); "
            f"drop {flags}"
        )


def memory_refusal(error: RuntimeError, what: str, options: Mapping[str, Any]) -> ConfigError:
    """The one line for `what` (with `options`) failing to allocate its tensors; any other error as it was."""
    if not isinstance(error, torch.OutOfMemoryError) and "allocate" not in str(error):
        raise error
    sizes = ", ".join(
        f"{flag(name)} {value}"
        for name, value in options.items()
        if isinstance(value, int) and not isinstance(value, bool)
    )
    return ConfigError(
        f"{what} with {sizes} does not fit in memory ({describe_error(error)}); lower the largest of them"
    )


def resolve(
    config: RunConfig, *, drop_unused_augment_options: bool = False, named: Collection[str] = ()
) -> ResolvedRun:
    """Check `config` against the registries and fill every default; raises ConfigError with the fix.
    `drop_unused_augment_options`: a grid cell's, which need not read every augmentation option; `named`:
    the options the command line names (`named_options`)."""
    if config.model not in MODELS:
        raise ConfigError(
            f"--model {config.model!r} is unknown{did_you_mean(config.model, MODELS)}; choose from "
            f"{', '.join(MODELS)} {PLUGIN_HINT}"
        )
    if config.data not in DATASETS:
        raise ConfigError(
            f"--data {config.data!r} is unknown{did_you_mean(config.data, DATASETS)}; choose from "
            f"{', '.join(DATASETS)} {PLUGIN_HINT}"
        )
    unknown_loggers = [name for name in config.logger if name not in LOGGER_CHOICES]
    if unknown_loggers:
        hint = "".join(did_you_mean(name, LOGGER_CHOICES) for name in unknown_loggers)
        raise ConfigError(
            f"--logger {', '.join(unknown_loggers)} is unknown{hint}; choose from {', '.join(LOGGER_CHOICES)}"
        )
    model = MODELS[config.model]
    _refuse_feature_options_without_metrics(config, model, named)
    check_inception_weights(config)
    _check_data_kind(config, model)
    plan = resolve_augment_plan(
        config,
        model.image_discriminator,
        drop_unused=drop_unused_augment_options,
        data_kind=DATASETS[config.data].data_kind,
    )
    _refuse_series_backbone(config)
    check_classifier_weights(config)
    options = _family_options(config, model, named)
    _refuse_a_likelihood_of_grey_pixels(config, options)
    data_options = parse_dataset_options(
        config.data, config.given_plugin_options(dataset_options()), named=named
    )
    unread = options.unread()
    budget: dict[str, Any] = {}
    if config.max_steps is None and config.max_epochs is None:
        budget["max_steps"] = DEFAULT_MAX_STEPS
    plugin_options = {
        **{name: None for name in dataset_options()},
        **data_options.to_dict(),
        # An option the run leaves unread is recorded as left to its default: no value shown did not act.
        **{name: None if name in unread else value for name, value in options.to_dict().items()},
        **plan.config_values(),
    }
    # A logger named twice is one logger.
    logger = list(dict.fromkeys(config.logger))
    complete = replace(config, logger=logger, plugin_options=plugin_options, **budget)
    world = stated_world_size(config)
    refuse_a_share_that_replaces_nothing(plan, config.batch_size // world, world)
    return ResolvedRun(complete, model, options, plan, data_options)


def stated_world_size(config: RunConfig) -> int:
    """The processes the command line states (devices times --num-nodes); 1 for `auto`."""
    count = device_count(config.devices)
    return 1 if count is None else count * max(1, config.num_nodes)


def refuse_a_share_that_replaces_nothing(plan: AugmentPlan, per_device: int, world_size: int = 1) -> None:
    """Online, the data side replaces round(p x B) images of each batch on a device: a p above 0 that
    rounds to none would run, and be recorded, as an augmentation that never acts."""
    if not plan.online or plan.p == AUTO or not plan.p or round(plan.p * per_device):
        return
    spread = f" on each of {world_size} devices" if world_size > 1 else ""
    raise ConfigError(
        f"--augment-p {plan.p:g} replaces round({plan.p:g} x {per_device}) = 0 of the {per_device} images of "
        f"a batch{spread}, so the data-side augmentation would never act; use --augment-p "
        f"{1 / per_device:.3g} or more (one image a batch), or a larger --batch-size"
    )


def check_shape_options(resolved: ResolvedRun) -> None:
    """--print-config refuses what the run would of the data shape options, which the dataset's constructor
    judges (importing Lightning: asked only when such an option is given)."""
    if all(value is None for value in resolved.data_options.to_dict().values()):
        return
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()
    resolved.build_datamodule()
