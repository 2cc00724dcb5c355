"""A folder of natural-image patches, for training on dense photographic texture offline.

BEGAN's paper trains on CelebA, where every pixel of every image carries content; digits and MNIST are
mostly a constant background. CelebA and CIFAR-10 cannot be had offline, so this writes square crops of
the two photographs scikit-learn ships (`sklearn.datasets.load_sample_images`: china.jpg, flower.jpg),
each crop `--crop` pixels at a seeded random position, as PNG files under OUT/china/ and OUT/flower/.
`run.py --data folder --data-dir OUT --image-size 16` then reads them as a labelled folder (two classes,
one per photograph), so the classifier features that score a run (fd_classifier, precision, recall) can be
trained on them.

    python bench/natural_patches.py --output OUT [--per-image 1500] [--crop 48] [--seed 0]

OUT must not exist yet: the script never writes among files it did not make.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_patches(output: Path, per_image: int, crop: int, seed: int) -> int:
    """Write `per_image` crops of each sample photograph under `output/<photo>/`; the number written."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    generator = np.random.default_rng(seed)
    written = 0
    for path, photo in zip(photos.filenames, photos.images, strict=True):
        folder = output / Path(path).stem
        folder.mkdir(parents=True)
        height, width = photo.shape[:2]
        tops = generator.integers(0, height - crop + 1, size=per_image)
        lefts = generator.integers(0, width - crop + 1, size=per_image)
        for index, (top, left) in enumerate(zip(tops, lefts, strict=True)):
            patch = photo[top : top + crop, left : left + crop]
            Image.fromarray(patch).save(folder / f"{index:05d}.png")
            written += 1
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="a folder that does not exist yet")
    parser.add_argument("--per-image", type=int, default=1500, help="crops per photograph")
    parser.add_argument("--crop", type=int, default=48, help="side of each square crop, in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop positions")
    args = parser.parse_args()
    if args.output.exists():
        print(f"error: {args.output} exists; pass a new --output folder", file=sys.stderr)
        return 2
    if not 8 <= args.crop <= 427:
        print(f"error: --crop {args.crop} must lie in 8..427 (the photographs are 427x640)", file=sys.stderr)
        return 2
    written = write_patches(args.output, args.per_image, args.crop, args.seed)
    print(f"wrote {written} crops of {args.crop}x{args.crop} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
