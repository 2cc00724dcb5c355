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
