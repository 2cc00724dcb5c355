"""Image-grid callbacks draw from whatever the data offers, small folders included."""

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from lightning_genae.callbacks.images import InterpolationGrid
from lightning_genae.models import AutoencoderModule

pytestmark = pytest.mark.quick


class FewValidationImages:
    """Stands in for a datamodule whose validation split holds `count` images."""

    def __init__(self, count: int) -> None:
        self.images = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8)

    def split_size(self, split: str) -> int:
        assert split == "val"
        return len(self.images)

    def items_at(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert split == "val"
        return self.images[indices], torch.zeros(len(indices), dtype=torch.long)


@pytest.mark.parametrize(("count", "rows"), [(5, 2), (4, 2), (40, 3), (1, 0)])
def test_interpolations_pair_validation_images_whatever_their_number(count, rows, tmp_path):
    module = AutoencoderModule((1, 8, 8), width=8, latent_dim=4).eval()
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path), loggers=[], datamodule=FewValidationImages(count)
    )
    grid = InterpolationGrid(count=3)
    with torch.no_grad():
        grid.draw(trainer, module, step=7)
    pictures = list(tmp_path.glob("images/interpolations_step*.png"))
    if rows == 0:
        # One image cannot be paired with another: no grid rather than a crash.
        assert pictures == []
        return
    (picture,) = pictures
    # A grid of `rows` rows of 8-pixel images with torchvision's 2-pixel padding around each.
    assert Image.open(picture).size == (grid.steps * 10 + 2, rows * 10 + 2)


def test_a_picture_makes_a_folder_no_run_watches_and_refuses_to_make_a_watched_one_again(tmp_path):
    from lightning_genae.callbacks.pictures import WATCHED_RUN_FOLDERS
    from lightning_genae.errors import RunFolderGone

    module = AutoencoderModule((1, 8, 8), width=8, latent_dim=4).eval()
    folder = tmp_path / "new" / "run"
    trainer = SimpleNamespace(default_root_dir=str(folder), loggers=[], datamodule=FewValidationImages(6))
    with torch.no_grad():
        InterpolationGrid(count=3).draw(trainer, module, step=7)
    assert len(list(folder.glob("images/interpolations_step*.png"))) == 1
    # A training's run folder, moved away while it trains, is not made again by its next picture.
    gone = tmp_path / "watched"
    trainer.default_root_dir = str(gone)
    WATCHED_RUN_FOLDERS[gone.resolve()] = "--resume last"
    try:
        with torch.no_grad(), pytest.raises(RunFolderGone, match="is gone"):
            InterpolationGrid(count=3).draw(trainer, module, step=8)
    finally:
        WATCHED_RUN_FOLDERS.pop(gone.resolve())
    assert not gone.exists()
