"""`resolve(config) -> ResolvedRun`: every option checked against its owner and every default filled, once
(`--augment` and its options against the augmentations and the model: `resolve_augment_plan`); and the checks
of the files a run reads beside its data (backbone weights, folders mixed into the data)."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_genae.augmentation import (
    AUGMENTATIONS,
    AugmentPlan,
    augmentation_choices,
    augmentation_fits,
    augmentation_options,
    augmenter_family,
    is_data_side,
    option_defaults,
    parse_augment,
)
from lightning_genae.cache import is_torch_file
from lightning_genae.datamodules import (
    DATASETS,
    build_datamodule,
    dataset_options,
    parse_dataset_options,
)
from lightning_genae.errors import PLUGIN_HINT, ConfigError, agree, describe_error, refuse_unread
from lightning_genae.experiment.config import (
    DEFAULT_MAX_STEPS,
    NO_BACKBONE,
    RunConfig,
    device_count,
    flag,
)
from lightning_genae.models import MODELS, FamilyOptions, ModelSpec
from lightning_genae.plugin_options import AUTO, PluginOptions

if TYPE_CHECKING:
    # Only named in annotations: resolving a configuration imports neither Lightning nor a family's module.
    from lightning_genae.datamodules import InMemoryDataModule
    from lightning_genae.experiment.augmenter import Attached
    from lightning_genae.models import DiscriminatorAugmentation, GenerativeModule
    from lightning_genae.models.protocols import StrengthController


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
        """The family's module, with the run's discriminator-side augmentation and ADA controller if any."""
        extra: dict[str, Any] = {}
        if discriminator_augmentation:
            extra["discriminator_augmentation"] = discriminator_augmentation
        if adaptive_strength is not None:
            extra["adaptive_strength"] = adaptive_strength
        with refusing_what_does_not_fit(f"--model {self.config.model}", self.options.to_dict()):
            return self.model.module(data_shape, **extra, **self.options.to_dict())

    def attach_augmentation(self, datamodule: InMemoryDataModule, **arguments: Any) -> Attached:
        """`augmenter.attach_augmentation` of this run's plan; one too large for memory is one line."""
        # Imported here: it imports Lightning, which `--help` and a configuration error never need.
        from lightning_genae.experiment.augmenter import attach_augmentation

        with refusing_what_does_not_fit(f"--augment {self.config.augment}", self.augment.options):
            return attach_augmentation(self.augment, datamodule, **arguments)

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
    """The family's options from what was given; another family's, or one left unread, is an error."""
    others = set(augmentation_options()) | set(dataset_options())
    # A stored None is an option left to its owner's default: no plug-in is needed for it.
    given = config.given_plugin_options(set(config.plugin_options) - others)
    own = model.options.types()
    foreign = f"does not apply to --model {config.model}; drop it"
    # An option no registered family declares may be a plug-in's that is not loaded.
    unknown = {name: f"{foreign} {PLUGIN_HINT}" for name in given if name not in model_option_names()}
    refuse_unread(sorted(set(given) - set(own)), unknown, foreign)
    return model.options.parse({name: value for name, value in given.items() if name in own}, given=named)


def named_options(command_line: Mapping[str, Any]) -> frozenset[str]:
    """The options the command line names, refused at any value where unread (`--no-x` asks for nothing)."""
    return frozenset(name for name, value in command_line.items() if value is not False)


def refuse_named_but_unread(resolved: ResolvedRun, named: Collection[str]) -> None:
    """What `resolve(..., named=named)` refuses of typed options, for a cell resolved without them."""
    config = resolved.config
    refuse_unread(sorted(named), resolved.options.unread())
    parse_dataset_options(config.data, config.given_plugin_options(dataset_options()), named=named)


@contextmanager
def refusing_what_does_not_fit(what: str, options: Mapping[str, Any]) -> Iterator[None]:
    """Within: `what` (with `options`) failing to allocate its tensors is one line naming its sizes."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not isinstance(error, torch.OutOfMemoryError) and "allocate" not in str(error):
            raise
        sizes = ", ".join(
            f"{flag(name)} {value}"
            for name, value in options.items()
            if isinstance(value, int) and not isinstance(value, bool)
        )
        raise ConfigError(
            f"{what} with {sizes} does not fit in memory ({describe_error(error)}); lower the largest of them"
        ) from None


def resolve(
    config: RunConfig, *, drop_unused_augment_options: bool = False, named: Collection[str] = ()
) -> ResolvedRun:
    """Check `config` against the registries and fill every default; raises ConfigError with the fix."""
    model, data = MODELS[config.model], DATASETS[config.data]
    check_weights_files(config)
    plan = resolve_augment_plan(
        config, model.image_discriminator, drop_unused=drop_unused_augment_options, data_kind=data.data_kind
    )
    options = _family_options(config, model, named)

    def names(registry: Mapping[str, Any], attribute: str, value: Any = True) -> str:
        return " or ".join(name for name, spec in registry.items() if getattr(spec, attribute) == value)

    # A family that does not generate computes no image metric: a backbone asked for, or its weights, would
    # be recorded as the run's without ever being read (--eval-samples, given to every family alike, is not).
    features = [f"--backbone {config.backbone}"] * (
        "backbone" in named and config.backbone != NO_BACKBONE
    ) + [flag(name) for name in ("classifier_weights", "inception_weights") if getattr(config, name)]
    wandb_url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    wandb_starts = os.environ.get("WANDB_MODE", "").lower() != "disabled"
    refusals = [
        (
            model.data_kind != data.data_kind,
            f"--model {config.model} models {model.data_kind} data and --data {config.data} is "
            f"{data.data_kind} data; use --data {names(DATASETS, 'data_kind', model.data_kind)}, or --model "
            + names(MODELS, "data_kind", data.data_kind),
        ),
        (
            features and not model.generates,
            f"{' and '.join(features)} {agree(features, 'gives', 'give')} the generative image metrics' "
            f"features, and --model {config.model} does not generate; drop {' and '.join(features)}",
        ),
        # Series are scored in their own classifier's features (where the dataset ships one), or not at all.
        (
            data.data_kind != "image" and config.backbone == "inception",
            f"--backbone inception scores images, and --data {config.data} is {data.data_kind} data; drop "
            "--backbone",
        ),
        # A Bernoulli decoder's score of grey levels is no likelihood, and would sit beside the literature's
        # binarized-MNIST figures without being one.
        (
            getattr(options, "nll_samples", 0) and not data.binary_pixels,
            f"--nll-samples estimates the likelihood of binary pixels, and --data {config.data} has grey "
            f"levels; use --data {names(DATASETS, 'binary_pixels')}, or drop --nll-samples",
        ),
        # wandb validates its server's URL as it starts, offline too, and would end the run in a traceback.
        (
            "wandb" in config.logger
            and wandb_starts
            and not re.match(r"https?://", wandb_url, re.IGNORECASE),
            f"WANDB_BASE_URL {wandb_url} is no http(s) URL; give one such as http://{wandb_url}, or unset it",
        ),
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(message)
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
        f"a batch{spread}; use --augment-p {1 / per_device:.3g} or more, or a larger --batch-size"
    )


def check_shape_options(resolved: ResolvedRun) -> None:
    """--print-config refuses the data shape options the run would (the dataset judges them)."""
    if all(value is None for value in resolved.data_options.to_dict().values()):
        return
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()
    resolved.build_datamodule()


def check_weights_files(config: RunConfig) -> None:
    """A backbone's weights file the user named is read by that backbone on image data only, and is a
    torch.save file (its contents are checked when the backbone is built, also before training)."""
    # Imported here: the backbones module pulls in torchmetrics, which --help and --print-config never need.
    from lightning_genae.metrics.backbones import INCEPTION_FILE, INCEPTION_URL

    fixes = {
        "inception": f"pass the path of {INCEPTION_FILE} (from {INCEPTION_URL})",
        "classifier": "pass a classifier checkpoint (the classifier command writes one)",
    }
    kind = DATASETS[config.data].data_kind
    for backbone, fix in fixes.items():
        name = f"{backbone}_weights"
        if getattr(config, name) is None:
            continue
        path = Path(getattr(config, name)).expanduser()
        if config.backbone != backbone or kind != "image":
            problem = (
                f"is read by --backbone {backbone} on image data only, and this run has --backbone "
                f"{config.backbone} on {kind} data; drop {flag(name)} or use --backbone {backbone}"
            )
        elif not is_torch_file(path):
            what = "is not a file written by torch.save" if path.exists() else "does not exist"
            problem = f"{path} {what}; {fix}"
        else:
            continue
        raise ConfigError(f"{flag(name)} {problem}")


def refuse_a_folder_among_the_data(config: RunConfig, folder: str | Path, scored: bool = False) -> None:
    """A run folder (or an `--evaluate-folder`, `scored`) inside or around the images of a dataset that reads
    every image under --data-dir (or a folder linked into it): the run's sample grids would be the next run's
    training images, the images scored among the real test images they are compared with."""
    if not DATASETS[config.data].reads_every_image:
        return
    data = os.path.realpath(os.path.expanduser(config.data_dir))
    roots = [Path(data)]
    for parent, subfolders, _ in os.walk(data):
        roots += [
            Path(os.path.realpath(os.path.join(parent, name)))
            for name in subfolders
            if os.path.islink(os.path.join(parent, name))
        ]
    path = Path(os.path.realpath(os.path.expanduser(folder)))
    overlapping = [root for root in roots if root == path or root in path.parents or path in root.parents]
    if not overlapping:
        return
    linked = "" if overlapping[0] == roots[0] else f" (through {overlapping[0]})"
    what, fix = "the run folder", "pick an --output"
    if scored:
        what, fix = "--evaluate-folder", "score a folder kept"
    raise ConfigError(
        f"{what} {folder} and --data-dir {config.data_dir}{linked} overlap, and --data {config.data} reads "
        f"every image there; {fix} apart from the data"
    )


def _settings(
    plan_names: tuple[str, ...], given: Mapping[str, Any], only: Collection[str] | None = None
) -> dict[str, PluginOptions]:
    """Each chosen augmentation's options from the given values it declares (in `only`, if given), checked."""
    settings = {}
    for name in plan_names:
        options = AUGMENTATIONS[name].options
        declared = options.types()
        settings[name] = options.parse(
            {key: value for key, value in given.items() if key in declared and (only is None or key in only)}
        )
    return settings


def _reading_settings(plan_names: tuple[str, ...], given: Mapping[str, Any]) -> dict[str, PluginOptions]:
    """The options as far as they decide what is read: a value out of its range is left at its default here,
    so that an unread option is refused as unread, not as out of range; a choice that fails is refused."""
    passing: dict[str, Any] = {}
    for options in {AUGMENTATIONS[name].options for name in plan_names}:
        own = options.passing_values(given)
        if own is None:
            _settings(plan_names, given)
        else:
            passing.update(own)
    return _settings(plan_names, given, only=set(passing))


def _options_read(settings: Mapping[str, PluginOptions]) -> tuple[set[str], dict[str, str]]:
    """(the options some chosen augmentation reads, the first one's reason for each it leaves unread)."""
    read: set[str] = set()
    reasons: dict[str, str] = {}
    for options in settings.values():
        unread = options.unread()
        read |= set(options.types()) - set(unread)
        reasons = {**unread, **reasons}
    return read, reasons


def resolve_augment_plan(
    config: RunConfig, image_discriminator: bool, drop_unused: bool = False, data_kind: str = "image"
) -> AugmentPlan:
    """Check the augmentation options against `--augment` and the model, and fill defaults; an ignored one is
    an error (`drop_unused`: left out), so an ablation never runs with a setting believed active."""
    names = parse_augment(config.augment)
    plan_names = tuple(name for name in names if name != "none")
    given = config.given_plugin_options(augmentation_options())
    image_only = [name for name in plan_names if not augmentation_fits(name, data_kind)]
    read, reasons = _options_read(_reading_settings(plan_names, given)) if not image_only else (set(), {})
    # ADA's controller (`ada`, `--augment-p auto`) steers p by the sign of a discriminator's real/fake logits.
    auto_p = "augment_p" in read and given.get("augment_p") == AUTO
    adaptive = [name for name in plan_names if name == "ada"] + ["--augment-p auto"] * auto_p
    d_side = [name for name in plan_names if AUGMENTATIONS[name].side == "discriminator"]
    # --augment-anneal takes the data side's p to zero; ae-d reads the same --augment-p and keeps it.
    data_side = [name for name in plan_names if is_data_side((name,))] or ["none"]
    anneals = "augment_anneal" in read and given.get("augment_anneal")
    fits = [name for name in augmentation_choices() if name == "none" or augmentation_fits(name, data_kind)]
    refusals = [
        (
            image_only,
            f"--augment {config.augment}: {', '.join(image_only)} {agree(image_only, 'works', 'work')} on "
            f"images only and --data {config.data} is {data_kind} data; use --augment {' or '.join(fits)}",
        ),
        (
            adaptive and not MODELS[config.model].real_logits,
            f"{' and '.join(adaptive)} {agree(adaptive, 'steers', 'steer')} p by the sign of a "
            f"discriminator's real/fake logits, and --model {config.model} has none; use --model "
            + " or ".join(name for name, spec in MODELS.items() if spec.real_logits),
        ),
        (
            d_side and not image_discriminator,
            f"--augment {config.augment}: {', '.join(d_side)} {agree(d_side, 'augments', 'augment')} the "
            f"inputs of a discriminator of images, and --model {config.model} has none; use --model "
            + " or ".join(name for name, spec in MODELS.items() if spec.image_discriminator)
            + " or --augment "
            + "/".join(name for name, spec in AUGMENTATIONS.items() if spec.side == "data"),
        ),
        (
            anneals and "ae-d" in plan_names and data_side != ["none"],
            f"--augment-anneal takes {data_side[0]}'s p to zero, and ae-d keeps --augment-p fixed; drop "
            f"--augment-anneal, or use --augment {data_side[0]} --augment-anneal",
        ),
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(message)
    if not drop_unused:
        nothing = f"does nothing with --augment {config.augment}; drop it, or use its augmentation"
        refuse_unread([name for name in given if name not in read], reasons, nothing)
    # Now every value read is checked; one the run does not read (a grid cell's) is left at its default.
    settings = _settings(plan_names, given, only=read)
    chosen = {key: value for options in settings.values() for key, value in options.to_dict().items()}
    used = {key: value for key, value in chosen.items() if key in read}
    defaults = option_defaults()
    return AugmentPlan(
        names=plan_names,
        augmenter_family=augmenter_family(plan_names, data_kind) or ("ae" if data_kind == "image" else "rae"),
        settings=settings,
        values={**defaults, **used},
        # Only what an augmentation uses goes into config.yaml; the rest stays None (= not set).
        options={key: used[key] for key in defaults if key in used},
    )


def augmentation_defaults(augment: str) -> dict[str, Any]:
    """The default of every option of the augmentations `augment` names (every arm of a grid's comma list)."""
    defaults: dict[str, Any] = {}
    for arm in str(augment).split(","):
        try:
            names = parse_augment(arm)
        except ConfigError:
            continue
        for name in (name for name in names if name in AUGMENTATIONS):
            defaults.update(AUGMENTATIONS[name].options.parse({}).to_dict())
    return defaults
