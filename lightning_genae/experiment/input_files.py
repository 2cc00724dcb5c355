"""Checks of the files a run reads beside its data, before anything trains: the feature backbones' weights,
and run or scored folders that would mix with a dataset reading every image under --data-dir."""

from __future__ import annotations

import os
from pathlib import Path

from lightning_genae.cache import is_torch_file
from lightning_genae.datamodules import DATASETS
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import RunConfig


def check_torch_file(flag_name: str, path: Path, fix: str) -> None:
    """What can be known of a weights file without reading it: a file, in one of torch.save's formats."""
    if not path.is_file():
        raise ConfigError(f"{flag_name} {path} {'is a folder' if path.is_dir() else 'does not exist'}; {fix}")
    if not is_torch_file(path):
        raise ConfigError(f"{flag_name} {path} is not a file written by torch.save; {fix}")


def check_inception_weights(config: RunConfig) -> None:
    """A weights file the user named is checked before anything trains (that it holds InceptionV3's weights,
    when the backbone is built, also before training)."""
    if config.inception_weights is None:
        return
    path = Path(config.inception_weights).expanduser()
    if config.backbone != "inception":
        raise ConfigError(
            f"--inception-weights is read by --backbone inception only, and this run uses --backbone "
            f"{config.backbone}; drop --inception-weights or add --backbone inception"
        )
    # Imported here: the backbones module pulls in torchmetrics, which --help and --print-config never need.
    from lightning_genae.metrics.backbones import INCEPTION_FILE, INCEPTION_URL

    fix = f"pass the path of {INCEPTION_FILE} (from {INCEPTION_URL})"
    check_torch_file("--inception-weights", path, fix)


def check_classifier_weights(config: RunConfig) -> None:
    """A classifier file the user named is checked before anything trains: that it is a torch file, for
    the backbone that reads it (its contents, when the backbone is built)."""
    if config.classifier_weights is None:
        return
    path = Path(config.classifier_weights).expanduser()
    if config.backbone != "classifier":
        raise ConfigError(
            f"--classifier-weights is read by --backbone classifier only, and this run uses --backbone "
            f"{config.backbone}; drop --classifier-weights or use --backbone classifier"
        )
    if DATASETS[config.data].data_kind != "image":
        raise ConfigError(
            f"--classifier-weights gives the image metrics' classifier, and --data {config.data} is series "
            "(scored by their own classifier); drop --classifier-weights"
        )
    check_torch_file(
        "--classifier-weights",
        path,
        "pass a classifier checkpoint (`python -m lightning_genae.experiment.classifier` writes one)",
    )


def _folders_of_the_images(config: RunConfig) -> list[Path]:
    """The real paths of --data-dir and the folders linked into it, which `--data folder` reads."""
    data = os.path.realpath(os.path.expanduser(config.data_dir))
    roots = [data]
    if os.path.isdir(data):
        for folder, subfolders, _ in os.walk(data):
            roots += [
                os.path.realpath(os.path.join(folder, name))
                for name in subfolders
                if os.path.islink(os.path.join(folder, name))
            ]
    return [Path(root) for root in roots]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def refuse_a_run_folder_among_the_data(config: RunConfig, run_dir: Path) -> None:
    """A run folder inside (or around) the images of a dataset that reads every image under --data-dir: the
    run's sample grids would be the next run's training images."""
    if not DATASETS[config.data].reads_every_image:
        return
    roots = _folders_of_the_images(config)
    run = Path(os.path.realpath(os.path.expanduser(run_dir)))
    inside = next((root for root in roots if _inside(run, root)), None)
    if inside is not None:
        linked = "" if inside == roots[0] else f" (through a link to {inside})"
        raise ConfigError(
            f"the run folder {run_dir} lies inside --data-dir {config.data_dir}{linked}, every image of "
            f"which --data {config.data} reads: the run's pictures would become the next run's training "
            "images; pick an --output outside it"
        )
    around = next((root for root in roots if run in root.parents), None)
    if around is not None:
        linked = "" if around == roots[0] else f" (a folder linked into it, {around})"
        raise ConfigError(
            f"--data-dir {config.data_dir}{linked} lies inside the run folder {run_dir}, where the run "
            f"writes its pictures, and --data {config.data} reads every image under it: they would become "
            "the next run's training images; keep the data outside the run folder, or pick another --output"
        )


def refuse_a_scored_folder_among_the_data(config: RunConfig, scored: str | Path) -> None:
    """`--evaluate-folder` of a folder that shares images with a dataset that reads every image under
    --data-dir: the images scored would be among the real test images they are compared with."""
    if not DATASETS[config.data].reads_every_image:
        return
    roots = _folders_of_the_images(config)
    folder = Path(os.path.realpath(os.path.expanduser(scored)))
    if any(_inside(folder, root) or folder in root.parents for root in roots):
        raise ConfigError(
            f"--evaluate-folder {scored} and --data-dir {config.data_dir} share images, every one of which "
            f"--data {config.data} reads: the images scored would be compared with themselves as real test "
            "images; score a folder kept apart from the data"
        )
