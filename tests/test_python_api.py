import sys

import pytest

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


def test_the_python_api_page_runs_as_written():
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
    blocks = python_blocks(page.read_text())
    assert blocks, "docs/python-api.md has no python block"
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})
