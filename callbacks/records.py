"""What a metric callback measured each stage on, and how the last validation's record survives a resume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StageRecords:
    """`records[stage]`: what that stage's metrics were measured on (split, sample counts, backbone), for
    summary.json and eval.json; the last validation's record travels in the checkpoints, for a run resumed
    only for its final evaluation."""

    records: dict[str, dict[str, Any]]

    def validation_record_state(self) -> dict[str, Any]:
        """The part of the callback's checkpoint state that carries the last validation's record."""
        return {"val_record": self.records["val"]} if "val" in self.records else {}

    def restore_validation_record(self, state: Mapping[str, Any]) -> None:
        """The last validation's record from a resumed checkpoint, until this run validates again."""
        if isinstance(state.get("val_record"), dict):
            self.records.setdefault("val", dict(state["val_record"]))
