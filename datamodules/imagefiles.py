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

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


# Modes with an alpha channel, composited over black when read (`read_square_image`).
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# A square crop, (left, top, right, bottom) in the image's pixels, that a dataset frames its images by.
CropBox = tuple[int, int, int, int]


def read_square_image(path: Path, size: int, channels: int, box: CropBox | None = None) -> np.ndarray:
    """One image as uint8 [C, size, size]: the square `box`, or without one the centred square of its
    shorter side, resized (PIL's bilinear filter covers each output pixel's footprint: antialiased)."""
    try:
        with Image.open(path) as image:
            # Read before the transposition, whose copy keeps no TIFF tags.
            white_is_zero = getattr(image, "tag_v2", {}).get(TIFF_PHOTOMETRIC) == TIFF_WHITE_IS_ZERO
            # Phones store rotation in EXIF; without this, portrait photos come out sideways.
            image = ImageOps.exif_transpose(image)
            # Palette images with transparency need RGBA as an intermediate, or PIL warns and guesses.
            if image.mode == "P":
                image = image.convert("RGBA")
            image = eight_bit(image, white_is_zero)
            if image.mode in TRANSPARENT_MODES or "transparency" in image.info:
                # Over black, as the datasets' backgrounds are: converted alone, a white digit drawn in the
                # alpha channel of a white image would read as a blank white square.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            image = image.convert("L" if channels == 1 else "RGB")
            width, height = image.size
            if box is None:
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                box = (left, top, left + side, top + side)
            elif box[2] > width or box[3] > height:
                raise ValueError(f"{width}x{height} pixels, too small for its dataset's crop {box}")
            # Crop before resizing: a resize with a crop box would blend in pixels from outside the square.
            image = image.crop(box)
            image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    # PIL reports broken files as OSError, ValueError or SyntaxError.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path} cannot be read as an image ({describe_error(exc)}): delete it, or replace it (8 or "
            "16-bit unsigned pixels)"
        ) from exc
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


# One-channel modes of more than 8 bits per pixel: 16-bit greyscale, 32-bit integers and floats.
WIDE_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# TIFF's PhotometricInterpretation tag, and its value for greyscale stored with white as 0.
TIFF_PHOTOMETRIC = 262
TIFF_WHITE_IS_ZERO = 0


def eight_bit(image: Image.Image, white_is_zero: bool = False) -> Image.Image:
    """`image` with 16-bit greyscale scaled to 8 bits (PIL's "L" clips at 255), turned if a TIFF stores
    white as 0; wider integers and floats have no fixed scale: a ValueError."""
    if image.mode not in WIDE_GREY_MODES:
        return image
    raw = np.asarray(image)
    if image.mode == "F" or (raw.size and (raw.min() < 0 or raw.max() > 65535)):
        kind = "32-bit float" if image.mode == "F" else "integer"
        raise ValueError(f"{kind} pixels from {raw.min()} to {raw.max()}, which have no fixed range")
    pixels = np.rint(raw.astype(np.float64) * (255 / 65535)).clip(0, 255).astype(np.uint8)
    if white_is_zero:
        pixels = 255 - pixels
    key = image.info.get("transparency")
    if isinstance(key, int):
        # A PNG's transparent colour (tRNS) is a 16-bit value here: carried as an alpha channel, as 8-bit
        # greyscale keeps it, so the image is laid over black like any other with transparency.
        alpha = np.where(raw == key, 0, 255).astype(np.uint8)
        return Image.merge("LA", [Image.fromarray(pixels, "L"), Image.fromarray(alpha, "L")])
    return Image.fromarray(pixels, "L")


def read_images(paths: Sequence[Path], size: int, channels: int, box: CropBox | None = None) -> Tensor:
    """All `paths` as one uint8 [N, C, size, size] tensor in order (`read_square_image`), threaded."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)

    def decode(item: tuple[int, Path]) -> None:
        index, path = item
        out[index] = read_square_image(path, size, channels, box)

    # PIL releases the GIL while decoding and resizing, so threads give real parallelism without pickling.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        list(pool.map(decode, enumerate(paths)))
    finally:
        # On a bad file, drop the queued work instead of decoding the rest before reporting it.
        pool.shutdown(cancel_futures=True)
    return torch.from_numpy(out)
