"""Decode image files once into one uint8 tensor: centre square crop, antialiased resize, parallel threads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from lightning_genae.errors import DataError, describe_error

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})
# (channels, height, width) a folder's images are read at unless --channels / --image-size say otherwise.
FOLDER_DEFAULT_SHAPE = (3, 64, 64)


def read_square_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 [C, size, size]: the centred square of its shorter side, resized with antialiasing.

    Same framing as resize-shorter-side-then-centre-crop, with one resampling instead of two; PIL's
    bilinear resize filters over the whole footprint of each output pixel, so downscaling is antialiased.
    """
    try:
        with Image.open(path) as image:
            # Phones store rotation in EXIF; without this, portrait photos come out sideways.
            image = ImageOps.exif_transpose(image)
            # Palette images with transparency need RGBA as an intermediate, or PIL warns and guesses.
            if image.mode == "P":
                image = image.convert("RGBA")
            image = image.convert("L" if channels == 1 else "RGB")
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            # Crop before resizing: a resize with a crop box would blend in pixels from outside the square.
            image = image.crop((left, top, left + side, top + side))
            image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    # PIL reports broken files as OSError (incl. UnidentifiedImageError), ValueError or SyntaxError.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path} cannot be read as an image ({describe_error(exc)}): delete or replace it"
        ) from exc
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_images(paths: Sequence[Path], size: int, channels: int) -> Tensor:
    """All `paths` as one uint8 [N, C, size, size] tensor, in order; decoding runs on a thread per core."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)

    def decode(item: tuple[int, Path]) -> None:
        index, path = item
        out[index] = read_square_image(path, size, channels)

    # PIL releases the GIL while decoding and resizing, so threads give real parallelism without pickling.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for _ in pool.map(decode, enumerate(paths)):
            pass
    finally:
        # On a bad file, drop the queued work instead of decoding the rest before reporting it.
        pool.shutdown(cancel_futures=True)
    return torch.from_numpy(out)
