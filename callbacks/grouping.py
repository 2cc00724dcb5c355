"""Several stateless callbacks as one entry in Lightning's list, each hook sent to the members defining it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pytorch_lightning.callbacks import Callback, Checkpoint, EarlyStopping, ProgressBar

# Every hook Lightning calls on a callback (not state_dict/load_state_dict: a group holds no state).
HOOKS = tuple(
    sorted(
        name
        for name in vars(Callback)
        if (name.startswith("on_") or name in ("setup", "teardown")) and callable(vars(Callback)[name])
    )
)
# Packages whose callbacks may be grouped: this project's (Lightning's own are left as Lightning made them).
OWN_PACKAGES = ("lightning_genae.", "callbacks.")


def groupable(callback: Callback) -> bool:
    """Whether `callback` can sit in a HookGroup: this project's, stateless, not looked up by type."""
    kind = type(callback)
    return (
        kind.__module__.startswith(OWN_PACKAGES)
        and not isinstance(callback, (Checkpoint, ProgressBar, EarlyStopping))
        and kind.state_dict is Callback.state_dict
        and kind.load_state_dict is Callback.load_state_dict
    )


class HookGroup(Callback):
    """Consecutive stateless callbacks behind one callback: each hook goes to the members that define it."""

    def __init__(self, members: Sequence[Callback]) -> None:
        self.members = list(members)
        # Lightning formats the state key into a label at every hook it dispatches: made once.
        self._state_key = f"HookGroup[{','.join(member.state_key for member in self.members)}]"
        self._targets: dict[str, list[Callable[..., Any]]] = {
            hook: [
                getattr(member, hook)
                for member in self.members
                if getattr(type(member), hook) is not getattr(Callback, hook)
            ]
            for hook in HOOKS
        }

    @property
    def state_key(self) -> str:
        return self._state_key


def _forwarding(hook: str) -> Callable[..., None]:
    def forward(self: HookGroup, *args: Any, **kwargs: Any) -> None:
        for target in self._targets[hook]:
            target(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = hook
    return forward


for _hook in HOOKS:
    setattr(HookGroup, _hook, _forwarding(_hook))


def grouped(callbacks: Iterable[Callback]) -> list[Callback]:
    """`callbacks` in order, each run of two or more consecutive groupable ones made one HookGroup."""
    out: list[Callback] = []
    for can_group, run in itertools.groupby(callbacks, groupable):
        run = list(run)
        out += [HookGroup(run)] if can_group and len(run) > 1 else run
    return out


def members(callbacks: Iterable[Callback]) -> list[Callback]:
    """Every callback of a Trainer's list, groups opened: what the run has, in the order it is called."""
    return [
        member
        for callback in callbacks
        for member in (callback.members if isinstance(callback, HookGroup) else [callback])
    ]
