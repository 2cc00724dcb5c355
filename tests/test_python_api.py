import sys

import pytest
import torch

import lightning_genae
from lightning_genae.errors import ConfigError
from lightning_genae.models.gan import GANModule


def test_trainer_kwargs_counts_iterations_not_optimizer_steps():
    kwargs = lightning_genae.trainer_kwargs(GANModule, iterations=50)
    assert kwargs["max_steps"] == 50 * GANModule.optimizer_steps_per_iteration == 100


def test_trainer_kwargs_rejects_a_non_positive_budget():
    with pytest.raises(ConfigError, match="iterations must be >= 1"):
        lightning_genae.trainer_kwargs(GANModule, iterations=0)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        lightning_genae.no_such_name  # noqa: B018
    assert "lightning_genae" in sys.modules


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    blocks, inside, current = [], False, []
    for line in markdown.splitlines():
        if not inside and line.strip() == "```python":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


@pytest.mark.parametrize("page", ["docs/python-api.md", "README.md"])
def test_the_python_snippets_run_as_written(page, tmp_path, monkeypatch):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / page
    blocks = python_blocks(path.read_text())
    assert blocks, f"{page} has no python block"
    monkeypatch.chdir(tmp_path)  # a snippet's files (Lightning's checkpoints) stay out of the checkout
    for block in blocks:
        exec(compile(block, str(path), "exec"), {})


@pytest.mark.parametrize(
    ("batch", "fix"),
    [
        ((torch.zeros(2, 1, 8, 8),), "dummy labels"),
        ((torch.zeros(2, 3, 8, 8), torch.zeros(2)), "build the model with the data's shape"),
        ((torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2)), "x.float() / 127.5 - 1"),
        ((torch.full((2, 1, 8, 8), 255.0), torch.zeros(2)), "scale the data to [-1, 1]"),
    ],
)
def test_a_batch_breaking_the_contract_gets_one_line_naming_the_fix(batch, fix):
    from lightning_genae.errors import DataError
    from lightning_genae.models.batch import check_batch

    with pytest.raises(DataError) as caught:
        check_batch(batch, "image", (1, 8, 8))
    assert fix in str(caught.value) and "\n" not in str(caught.value)


def test_a_batch_in_zero_one_is_warned_about():
    from lightning_genae.models.batch import check_batch

    with pytest.warns(UserWarning, match="looks like \\[0, 1\\]"):
        check_batch((torch.rand(2, 1, 8, 8), torch.zeros(2)), "image", (1, 8, 8))


def test_callbacks_for_refuses_a_datamodule_it_cannot_read_in_one_line():
    import pytorch_lightning as pl

    model = GANModule((1, 16, 16), latent_dim=4, width=4)
    with pytest.raises(ConfigError) as error:
        lightning_genae.callbacks_for(model, pl.LightningDataModule(), "unused")
    message = str(error.value)
    assert "\n" not in message and "TensorImageDataModule" in message


def test_callbacks_for_names_the_family_and_keeps_only_what_can_act(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_genae.callbacks import ReconstructionGrid, SampleGrid
    from lightning_genae.callbacks.metrics import GenerativeMetrics
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models import MODELS
    from lightning_genae.trainer import family_name

    data = build_datamodule("digits", data_dir=tmp_path)
    for name, spec in MODELS.items():
        if spec.data_kind == "image":
            assert family_name(spec.module((1, 16, 16), latent_dim=4, width=4)) == name
    gan = MODELS["gan"].module((1, 16, 16), latent_dim=4, width=4)
    kinds = [type(c) for c in lightning_genae.callbacks_for(gan, data, tmp_path, metrics=True)]
    assert SampleGrid in kinds and GenerativeMetrics in kinds and ReconstructionGrid not in kinds
    assert gan.monitor == "val/fd_classifier", "the best checkpoint follows the headline metric"
    assert sum(kind is ModelCheckpoint for kind in kinds) == 2  # last.ckpt and best.ckpt
    plain = [type(c) for c in lightning_genae.callbacks_for(gan, data, tmp_path, metrics=False)]
    assert GenerativeMetrics not in plain


SPLITS = ("train", "val", "test")


@pytest.mark.parametrize(
    ("splits", "fix"),
    [
        ({"train": (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4))}, "give train, val and test"),
        ({s: (torch.zeros(4, 1, 8, 8), torch.zeros(4)) for s in SPLITS}, "to(torch.uint8)"),
        ({s: (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(3)) for s in SPLITS}, "[N]"),
    ],
)
def test_tensor_datamodule_refuses_what_it_cannot_store_in_one_line(splits, fix):
    from lightning_genae.datamodules import TensorImageDataModule
    from lightning_genae.errors import DataError

    with pytest.raises(DataError) as error:
        TensorImageDataModule(splits)
    assert fix in str(error.value) and "\n" not in str(error.value)


def test_tensor_datamodule_serves_its_splits_with_their_shape_and_classes():
    from lightning_genae.datamodules import TensorImageDataModule

    images = torch.arange(6 * 16, dtype=torch.uint8).view(6, 1, 4, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    data = TensorImageDataModule({s: (images, labels) for s in SPLITS}, name="mine")
    assert data.image_shape == (1, 4, 4) and data.num_classes == 3 and data.name == "mine"
    stored, stored_labels = data.split_tensors("val")
    assert torch.equal(stored, images) and torch.equal(stored_labels, labels)
