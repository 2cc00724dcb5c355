"""Benchmark: what Lightning's callback dispatch costs per training iteration of a run, callback by callback.

Lightning calls every callback of a Trainer at every hook, acting or not: for a GAN (two optimizers) seven
training hooks per iteration (`on_train_batch_start`/`_end`, and per optimizer `on_before_backward`,
`on_after_backward`, `on_before_optimizer_step`). This runs `run.py`'s own code path (`cli.main`, the run's
callbacks as `train.run` builds them) with small networks and times, with this process's CPU time, each
callback's share of those hooks (Lightning's per-callback dispatch included: the attribute lookup, the state
key, the profiler's context) and the whole dispatch per iteration. The timer wraps Lightning's private
`pytorch_lightning.trainer.call._call_callback_hooks`, and adds its own clock reads to what it measures:
compare figures from this script with each other, not with `bench/overhead.py`'s.

    python bench/callback_dispatch.py [--families gan,vae,ae] [--steps 400] [--width 8] [--json F]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TRAINING_HOOKS = frozenset(
    {
        "on_train_batch_start",
        "on_train_batch_end",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_before_zero_grad",
    }
)
NEVER = 10**9


def timed_dispatch(spent: collections.Counter, total: list[float]) -> Any:
    """A stand-in for Lightning's hook dispatch that does what it does and times each callback's part."""
    import pytorch_lightning.trainer.call as call

    from lightning_genae.callbacks.grouping import HookGroup

    original = call._call_callback_hooks

    def dispatch(trainer: Any, hook_name: str, *args: Any, monitoring_callbacks: Any = None, **kwargs: Any):
        if hook_name not in TRAINING_HOOKS or monitoring_callbacks is not None:
            return original(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks, **kwargs)
        started = time.process_time()
        pl_module = trainer.lightning_module
        previous, pl_module._current_fx_name = pl_module._current_fx_name, hook_name
        for callback in trainer.callbacks:
            callback_started = time.process_time()
            hook = getattr(callback, hook_name)
            if callable(hook):
                with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook_name}"):
                    hook(trainer, trainer.lightning_module, *args, **kwargs)
            # A group of callbacks (callbacks/grouping.py) is named by its members.
            name = callback.state_key if isinstance(callback, HookGroup) else type(callback).__name__
            spent[name] += time.process_time() - callback_started
        pl_module._current_fx_name = previous
        total[0] += time.process_time() - started
        return None

    return call, original, dispatch


def measure(family: str, data: str, steps: int, width: int, batch: int) -> dict[str, Any]:
    from lightning_genae.experiment.cli import main

    spent: collections.Counter = collections.Counter()
    total = [0.0]
    call, original, dispatch = timed_dispatch(spent, total)
    call._call_callback_hooks = dispatch
    try:
        with tempfile.TemporaryDirectory() as out:
            argv = [
                *("--model", family, "--data", data, "--max-steps", str(steps), "--batch-size", str(batch)),
                *("--width", str(width), "--train-size", "2048", "--eval-samples", "256"),
                *("--eval-every", str(NEVER), "--image-every", str(NEVER), "--ckpt-every", str(NEVER)),
                *("--output", str(Path(out) / "run"), "--accelerator", "cpu"),
            ]
            if main(argv) != 0:
                raise SystemExit(f"run.py {' '.join(argv)} failed")
    finally:
        call._call_callback_hooks = original
    per_callback = {name: round(1000 * seconds / steps, 4) for name, seconds in spent.most_common()}
    return {
        "family": family,
        "callbacks": len(per_callback),
        "dispatch_ms_per_iteration": round(1000 * total[0] / steps, 3),
        "per_callback_ms_per_iteration": per_callback,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="gan", help="comma list of model families")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default="bench/callback_dispatch.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        measure(family, args.data, args.steps, args.width, args.batch_size)
        for family in args.families.split(",")
    ]
    for row in rows:
        dispatch = row["dispatch_ms_per_iteration"]
        print(f"\n{row['family']}: {row['callbacks']} callbacks, dispatch {dispatch:.3f} ms per iteration")
        for name, ms in row["per_callback_ms_per_iteration"].items():
            print(f"  {name:34}{ms:8.3f}")
    Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
