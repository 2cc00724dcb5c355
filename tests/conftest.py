"""Shared fixtures: where the real datasets live."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """The folder holding MNIST/raw: $GENAE_DATA_DIR, else ../shared/data next to the repo.

    Skips when absent, except on CI (CI=true), where a silent skip would hide that the test never ran.
    """
    data_dir = Path(os.environ.get("GENAE_DATA_DIR", REPO.parent / "shared" / "data"))
    raw = data_dir / "MNIST" / "raw"
    if not any((raw / name).is_file() for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")):
        message = f"real MNIST not found at {raw} (set GENAE_DATA_DIR to the folder holding MNIST/raw)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return data_dir
