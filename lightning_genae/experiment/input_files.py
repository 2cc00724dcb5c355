"""Checks of the files a run reads beside its data, before anything trains: the feature backbones' weights,
and run or scored folders that would mix with a dataset reading every image under --data-dir."""

from __future__ import annotations

import os
from pathlib import Path

from lightning_genae.cache import is_torch_file
from lightning_genae.datamodules import DATASETS
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import RunConfig, flag


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
        if config.backbone != backbone or kind != "image":
            raise ConfigError(
                f"{flag(name)} is read by --backbone {backbone} on image data only, and this run has "
                f"--backbone {config.backbone} on {kind} data; drop {flag(name)} or use --backbone {backbone}"
            )
        path = Path(getattr(config, name)).expanduser()
        if not is_torch_file(path):
            what = "is not a file written by torch.save" if path.exists() else "does not exist"
            raise ConfigError(f"{flag(name)} {path} {what}; {fix}")


def _overlap(config: RunConfig, folder: str | Path) -> Path | None:
    """The folder of the images `--data {config.data}` reads (--data-dir, or a folder linked into it) that
    lies inside `folder` or holds it, where the dataset reads every image under --data-dir; else None."""
    if not DATASETS[config.data].reads_every_image:
        return None
    data = os.path.realpath(os.path.expanduser(config.data_dir))
    roots = [Path(data)]
    for parent, subfolders, _ in os.walk(data):
        roots += [
            Path(os.path.realpath(os.path.join(parent, name)))
            for name in subfolders
            if os.path.islink(os.path.join(parent, name))
        ]
    path = Path(os.path.realpath(os.path.expanduser(folder)))
    return next(
        (root for root in roots if root == path or root in path.parents or path in root.parents), None
    )


def refuse_a_folder_among_the_data(config: RunConfig, folder: str | Path, scored: bool = False) -> None:
    """A run folder (or an `--evaluate-folder`, `scored`) inside or around the images of a dataset that reads
    every image under --data-dir: the run's sample grids would be the next run's training images, the images
    scored among the real test images they are compared with."""
    if (root := _overlap(config, folder)) is None:
        return
    linked = (
        "" if root == Path(os.path.realpath(os.path.expanduser(config.data_dir))) else f" (through {root})"
    )
    what, why = (
        (
            "--evaluate-folder",
            "the images scored would be compared with themselves as real test "
            "images; score a folder kept apart from the data",
        )
        if scored
        else (
            "the run folder",
            "the run's pictures would become the next run's training images; pick an --output "
            "apart from the data",
        )
    )
    raise ConfigError(
        f"{what} {folder} and --data-dir {config.data_dir}{linked} overlap, and --data {config.data} reads "
        f"every image there: {why}"
    )
