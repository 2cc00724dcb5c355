"""What the augmentations share: seeded draws alike on every device, and the check of operation name lists."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor

from lightning_genae.datamodules.placement import host_to_device
from lightning_genae.errors import OptionError


def drawn(
    make: Callable[..., Tensor], *args: object, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """`make(*args)` (torch.rand, randn, randint) on `device`, drawn where the generator lives (normally the
    CPU) so that a seed reproduces on every device; without one, from the device's global RNG."""
    home = device if generator is None else generator.device
    return host_to_device(make(*args, generator=generator, device=home), device)


def check_operation_names(
    names: Sequence[str], operations: Collection[str], option: str, source: str
) -> tuple[str, ...]:
    """Refuse unknown or repeated (twice applied) operation names with `option`'s OptionError."""
    unknown = [name for name in names if name not in operations]
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if unknown or repeated:
        fault = (
            f"unknown operation {', '.join(unknown)}" if unknown else f"{', '.join(repeated)} listed twice"
        )
        raise OptionError(option, f"{source!r}: {fault}; choose from {', '.join(operations)}, each once")
    return tuple(names)


def parse_operation_names(text: str, operations: Collection[str], option: str) -> tuple[str, ...]:
    """Split `"color, translation"` into names, in the order given; an empty entry is an unknown name."""
    return check_operation_names([name.strip() for name in text.split(",")], operations, option, text)
