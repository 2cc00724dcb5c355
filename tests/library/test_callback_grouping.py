"""Consecutive stateless callbacks of a run answer Lightning as one HookGroup, each hook reaching only the
members that define it, in their order; callbacks Lightning looks up by type or asks for state stay apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lightning_genae.callbacks.grouping import HOOKS, HookGroup, groupable, grouped, members
from lightning_genae.callbacks.progress_bar import IterationProgressBar
from lightning_genae.callbacks.random_state import RandomStateInCheckpoints
from lightning_genae.callbacks.stopping import StopOnSignal
from lightning_genae.callbacks.training import LogStepIsIteration, SeedPerRank

pytestmark = pytest.mark.quick


class Noting(Callback):
    """Notes each call of the two hooks it defines, by name."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.calls.append(f"{self.name}.on_train_batch_end({batch_idx})")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[self.name] = True


class Silent(Callback):
    """Defines no hook."""


def test_a_group_calls_only_the_members_that_define_a_hook_in_their_order():
    calls: list[str] = []
    group = HookGroup([Noting("first", calls), Silent(), Noting("second", calls)])
    group.on_train_batch_end(None, None, None, None, 7)
    assert calls == ["first.on_train_batch_end(7)", "second.on_train_batch_end(7)"]
    checkpoint: dict = {}
    group.on_save_checkpoint(None, None, checkpoint)
    assert checkpoint == {"first": True, "second": True}
    assert group._targets["on_before_backward"] == []
    assert {"setup", "teardown", "on_train_batch_end", "on_exception"} <= set(HOOKS)


def test_only_consecutive_stateless_callbacks_of_the_project_are_grouped_and_the_order_is_kept():
    guard_like = [SeedPerRank(0), LogStepIsIteration(2)]
    state = RandomStateInCheckpoints()
    checkpoint = ModelCheckpoint()
    bar = IterationProgressBar()
    foreign = Silent()
    listed = [
        *guard_like,
        state,
        StopOnSignal(Path("last.ckpt"), "run it again"),
        bar,
        checkpoint,
        foreign,
    ]
    listed += [SeedPerRank(1), LogStepIsIteration(2)]
    assert not any(groupable(kept) for kept in (state, checkpoint, bar, foreign))
    result = grouped(listed)
    assert [type(c).__name__ for c in result] == [
        "HookGroup",
        "RandomStateInCheckpoints",
        "StopOnSignal",
        "IterationProgressBar",
        "ModelCheckpoint",
        "Silent",
        "HookGroup",
    ]
    assert members(result) == listed
    assert result[0].state_key == "HookGroup[SeedPerRank,LogStepIsIteration]"
