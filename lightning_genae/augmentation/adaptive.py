"""The adaptive strength of an augmentation, ADA's heuristic (Karras et al. 2020, section 3): p moves with
sign(E[sign(D(x_real))] - target), kept on the device; `p_host` is a host copy one update behind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_genae.plugin_options import PluginOptions, option


@dataclass(frozen=True)
class ControllerOptions(PluginOptions):
    """The controller's settings, read by `ada` and by `--augment-p auto`: ADA's target and interval, and a
    kimg of 100 rather than ADA's 500, at which p can move by 0.96 within a run of 1,500 iterations of 64."""

    ada_target: float = option(
        0.6,
        "ada and --augment-p auto: the r_t = E[sign(D(real))] that p is steered to (raise it: less "
        "augmentation)",
        at_least=0,
        at_most=1,
        tunable=True,
    )
    ada_interval: int = option(
        4, "ada and --augment-p auto: discriminator steps between updates of p", at_least=1
    )
    ada_kimg: float = option(
        100.0,
        "ada and --augment-p auto: thousands of real images for p to move from 0 to 1 (ADA: 500, for "
        "runs of millions of images; the default suits runs of ~100k images)",
        above=0,
    )


class AdaptiveStrength:
    """ADA's controller: call `observe(real_logits)` once per D step; read `p` (a 0-dim tensor)."""

    def __init__(self, target: float, interval: int, kimg: float, device: torch.device | str = "cpu") -> None:
        self.target = target
        self.interval = interval
        self.kimg = kimg
        device = torch.device(device)
        self.p = torch.zeros((), device=device)
        # The last update's r_t (0 until the first update).
        self.rt = torch.zeros((), device=device)
        self._sign_sum = torch.zeros((), device=device)
        self._count = 0  # real images observed since the last update (host: len of each batch)
        self._steps = 0  # discriminator steps observed since the last update
        self.p_host = 0.0
        self._staged_p: Tensor | None = None
        self._staged_ready: Any = None  # a CUDA event when the staged copy was made asynchronously

    @property
    def device(self) -> torch.device:
        return self.p.device

    def to(self, device: torch.device | str) -> AdaptiveStrength:
        device = torch.device(device)
        self.p, self.rt, self._sign_sum = (t.to(device) for t in (self.p, self.rt, self._sign_sum))
        return self

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """Accumulate one discriminator step's real logits; every `interval` steps, move p."""
        if real_logits.device != self.device:
            self.to(real_logits.device)
        self._sign_sum = self._sign_sum + real_logits.detach().float().sign().sum()
        self._count += real_logits.numel()
        self._steps += 1
        if self._steps >= self.interval:
            self._update()

    def _totals(self) -> tuple[Tensor, Tensor]:
        """The interval's sign sum and image count over every rank (so that every rank moves p alike)."""
        sign_sum, count = self._sign_sum.clone(), torch.tensor(float(self._count), device=self.device)
        if _several_processes():
            dist.all_reduce(sign_sum)
            dist.all_reduce(count)
        return sign_sum, count

    def _update(self) -> None:
        sign_sum, count = self._totals()  # once per interval
        self.rt = sign_sum / count.clamp(min=1)
        step = torch.sign(self.rt - self.target) * count / (self.kimg * 1000)
        self.p = (self.p + step).clamp(0.0, 1.0)
        self._sign_sum = torch.zeros((), device=self.device)
        self._count = 0
        self._steps = 0
        # The host copy staged at the previous update, long finished, becomes p_host; this p is staged.
        if self._staged_ready is not None:
            self._staged_ready.synchronize()
        if self._staged_p is not None:
            self.p_host = float(self._staged_p)
        if self.device.type == "cuda":
            self._staged_p = torch.empty((), pin_memory=True)
            self._staged_p.copy_(self.p, non_blocking=True)
            self._staged_ready = torch.cuda.Event()
            self._staged_ready.record()
        else:
            self._staged_p = self.p.clone()

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain numbers only (checkpoints are loaded with weights_only=True). Under DDP every
        rank calls it as a checkpoint is made and the checkpoint keeps the interval's totals over ranks."""
        sign_sum, count = self._totals()
        return {
            "p": self.p.detach().cpu(),
            "rt": self.rt.detach().cpu(),
            "sign_sum": sign_sum.cpu(),
            "count": int(count.item()),
            "steps": self._steps,
            "p_host": self.p_host,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = state["p"].to(self.device).float()
        self.rt = state["rt"].to(self.device).float()
        # The interval's totals go to one rank and the others start at zero: the next update's all-reduce
        # then reads the totals the checkpoint held, whatever the number of processes now.
        first = not _several_processes() or dist.get_rank() == 0
        self._sign_sum = state["sign_sum"].to(self.device).float() * (1.0 if first else 0.0)
        self._count = int(state["count"]) if first else 0
        self._steps = int(state["steps"])
        # The host copy as it was, and the next update takes the restored p: as in the uninterrupted run.
        self.p_host = float(state["p_host"])
        self._staged_p = self.p.detach().cpu().clone()
        self._staged_ready = None

    def __repr__(self) -> str:
        return f"adaptive p (target {self.target}, every {self.interval} steps, {self.kimg} kimg to 1)"


def _several_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
