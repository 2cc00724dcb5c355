"""TimeGAN's post-hoc discriminative and predictive scores as its reference code computes them (Yoon et al.,
NeurIPS 2019, Table 2; jsyoon0823/TimeGAN), on series [N, T, C] min-max scaled to [0, 1] per channel, each
score the mean of 10 repetitions. The post-hoc nets are TensorFlow 1's `GRUCell` and dense read-out written
out with its equations and initialisation (torch's random streams: not bit-identical). The quick variants
logged in training (metrics.sequences) are not comparable with these."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_genae.seeding import int_seed

DISCRIMINATIVE_ITERATIONS = 2000
PREDICTIVE_ITERATIONS = 5000
BATCH_SIZE = 128
TRAIN_RATE = 0.8
# Adam's default in TensorFlow 1, which the reference uses unchanged.
LEARNING_RATE = 1e-3
# main_timegan.py's default `metric_iteration`.
REPETITIONS = 10


def hidden_size(channels: int) -> int:
    """The reference's post-hoc GRU width, int(C / 2); it needs at least two channels."""
    if channels < 2:
        raise ValueError(f"TimeGAN's scores need at least 2 channels (hidden size int(C/2)), got {channels}")
    return channels // 2


def _check(real: Tensor, generated: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets as float32 on the CPU: at least two finite series each (one to train on, one to test)."""
    for name, x in (("real", real), ("generated", generated)):
        if len(x) < 2 or not torch.isfinite(x).all():
            raise ValueError(f"{name} series must be at least 2, of finite values")
    return real.detach().float().cpu(), generated.detach().float().cpu()


def train_test_divide(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices (train, test) of one set: a random permutation cut at int(0.8 * count), as utils.py does."""
    order = torch.randperm(count, generator=generator)
    cut = int(count * TRAIN_RATE)
    return order[:cut], order[cut:]


def _batch(count: int, generator: torch.Generator) -> Tensor:
    """The first min(128, count) of a fresh permutation, as `batch_generator` draws a mini-batch."""
    return torch.randperm(count, generator=generator)[:BATCH_SIZE]


class _ReferenceGRU(nn.Module):
    """TensorFlow 1's GRUCell over a series [N, T, inputs]: (states [N, T, hidden], last state [N, hidden]).
    r, u = sigmoid([x, h] W_g + b_g); c = tanh([x, r * h] W_c + b_c); h' = u * h + (1 - u) * c from a zero
    state; W_g and W_c Glorot-uniform over their whole shapes (TensorFlow's default), b_g 1, b_c 0."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.inputs = inputs
        self.gate_kernel = nn.Parameter(torch.empty(inputs + hidden, 2 * hidden))
        self.gate_bias = nn.Parameter(torch.ones(2 * hidden))
        self.candidate_kernel = nn.Parameter(torch.empty(inputs + hidden, hidden))
        self.candidate_bias = nn.Parameter(torch.zeros(hidden))
        nn.init.xavier_uniform_(self.gate_kernel)
        nn.init.xavier_uniform_(self.candidate_kernel)

    def forward(self, series: Tensor) -> tuple[Tensor, Tensor]:
        gate_x, gate_h = self.gate_kernel[: self.inputs], self.gate_kernel[self.inputs :]
        candidate_x, candidate_h = self.candidate_kernel[: self.inputs], self.candidate_kernel[self.inputs :]
        # The input's share of both products for every step at once; only the state's is sequential.
        gates_from_x = series @ gate_x + self.gate_bias
        candidates_from_x = series @ candidate_x + self.candidate_bias
        state = series.new_zeros(len(series), self.candidate_bias.shape[0])
        states = []
        for step in range(series.shape[1]):
            reset, update = torch.sigmoid(gates_from_x[:, step] + state @ gate_h).chunk(2, dim=1)
            candidate = torch.tanh(candidates_from_x[:, step] + (reset * state) @ candidate_h)
            state = update * state + (1 - update) * candidate
            states.append(state)
        return torch.stack(states, dim=1), state


def _seeded_net(inputs: int, hidden: int, seed: int) -> nn.Module:
    """The reference's post-hoc net: `rnn` a TensorFlow 1 GRUCell, `out` a dense read-out (Glorot kernel, zero
    bias), initialised from `seed` alone, leaving the caller's global random stream where it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.ModuleDict({"rnn": _ReferenceGRU(inputs, hidden), "out": nn.Linear(hidden, 1)})
        nn.init.xavier_uniform_(net.out.weight)
        nn.init.zeros_(net.out.bias)
        return net


def discriminative_score_timegan(
    real: Tensor, generated: Tensor, seed: int = 0, iterations: int = DISCRIMINATIVE_ITERATIONS
) -> float:
    """|0.5 - test accuracy| of a post-hoc GRU classifier of real vs generated (0 best, 0.5 worst)."""
    real, generated = _check(real, generated)
    generator = torch.Generator().manual_seed(seed)
    net = _seeded_net(real.shape[2], hidden_size(real.shape[2]), seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

    def logits(x: Tensor) -> Tensor:
        last_state = net.rnn(x)[1]
        return net.out(last_state).squeeze(-1)

    real_train, real_test = train_test_divide(len(real), generator)
    fake_train, fake_test = train_test_divide(len(generated), generator)
    real_train, real_test = real[real_train], real[real_test]
    fake_train, fake_test = generated[fake_train], generated[fake_test]
    for _ in range(iterations):
        real_logits = logits(real_train[_batch(len(real_train), generator)])
        fake_logits = logits(fake_train[_batch(len(fake_train), generator)])
        loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        correct = (torch.sigmoid(logits(real_test)) > 0.5).sum() + (
            torch.sigmoid(logits(fake_test)) <= 0.5
        ).sum()
    accuracy = correct.item() / (len(real_test) + len(fake_test))
    return abs(0.5 - accuracy)


def _predict(net: nn.Module, series: Tensor) -> Tensor:
    """Sigmoid prediction of the last channel at steps 1..T-1 from the other channels at 0..T-2."""
    return torch.sigmoid(net.out(net.rnn(series[:, :-1, :-1])[0])).squeeze(-1)


def predictive_score_timegan(
    real: Tensor, generated: Tensor, seed: int = 0, iterations: int = PREDICTIVE_ITERATIONS
) -> float:
    """Mean absolute error on the real series of a one-step-ahead GRU predictor trained on the generated."""
    real, generated = _check(real, generated)
    target = real[..., -1]
    low, high = target.min().item(), target.max().item()
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"the real series' last channel (the sigmoid predictor's target) spans [{low:.4g}, {high:.4g}]; "
            "min-max scale both sets to [0, 1] by the real series' per-channel range"
        )
    channels = real.shape[2]
    generator = torch.Generator().manual_seed(seed)
    net = _seeded_net(channels - 1, hidden_size(channels), seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    for _ in range(iterations):
        batch = generated[_batch(len(generated), generator)]
        loss = (_predict(net, batch) - batch[:, 1:, -1]).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        # Every series has T - 1 targets, so the mean of per-series MAEs is the mean over all targets.
        return (_predict(net, real) - real[:, 1:, -1]).abs().mean().item()


@dataclass(frozen=True)
class TimeGANScores:
    """Both scores over `repetitions` fits: mean and population std (NumPy's np.std). main_timegan.py reports
    only the mean over its fits; the paper does not say how Table 2's ± is computed."""

    discriminative: tuple[float, ...]
    predictive: tuple[float, ...]

    @property
    def discriminative_mean_std(self) -> tuple[float, float]:
        return statistics.fmean(self.discriminative), statistics.pstdev(self.discriminative)

    @property
    def predictive_mean_std(self) -> tuple[float, float]:
        return statistics.fmean(self.predictive), statistics.pstdev(self.predictive)


def timegan_scores(
    real: Tensor,
    generated: Tensor,
    repetitions: int = REPETITIONS,
    seed: int = 0,
    discriminative_iterations: int = DISCRIMINATIVE_ITERATIONS,
    predictive_iterations: int = PREDICTIVE_ITERATIONS,
    on_fit: Callable[[], None] = lambda: None,
) -> TimeGANScores:
    """Each score fitted `repetitions` times afresh, as main_timegan.py does, from "timegan fit" streams."""
    seeds = [int_seed(seed, "timegan fit", repetition) for repetition in range(repetitions)]

    def fitted(score: float) -> float:
        on_fit()
        return score

    return TimeGANScores(
        discriminative=tuple(
            fitted(discriminative_score_timegan(real, generated, s, discriminative_iterations)) for s in seeds
        ),
        predictive=tuple(
            fitted(predictive_score_timegan(real, generated, s, predictive_iterations)) for s in seeds
        ),
    )
