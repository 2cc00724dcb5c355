"""Quick variants of TimeGAN's discriminative and predictive scores, cheap enough for every validation, named
apart from TimeGAN's (metrics.timegan), which they do not match. Each post-hoc GRU is deterministic given
`seed`; a score is the mean over its fits with their spread (`_std`). Beside them: the share of series outside
the training range, and a wider GRU's discriminative score, each with real series' own as its floor."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_genae.metrics.feature_set import GenerativeScore, score_feature_sets
from lightning_genae.metrics.names import metric_name
from lightning_genae.progress import evaluation_progress

if TYPE_CHECKING:
    from lightning_genae.metrics.sequence_classifier import SequenceFeatures

MIN_HIDDEN = 8
# TimeGAN trains 2,000 (discriminative) and 5,000 (predictive) steps at Adam's default 1e-3; a few hundred
# steps at 1e-2 separate real from clearly wrong series as well and fit in every validation on the CPU.
DEFAULT_STEPS = 300
DEFAULT_BATCH = 128
DEFAULT_LR = 1e-2
# TimeGAN's split: 80% of each set to train the post-hoc discriminator, 20% to test it.
TRAIN_FRACTION = 0.8
EVAL_BATCH = 1000
# A value counts as outside the training range past this margin (model units, a standardised scale): the
# range and a bounded model's outputs are computed apart in float32 and may differ in the last bits.
RANGE_ROUNDING = 1e-5
# The wide discriminator's hidden size: TimeGAN's is C // 2 (2 units on its 5-channel Sines), too few to see
# some differences a reader sees; 64 units are as wide as the rae's default recurrent layers.
WIDE_HIDDEN = 64


def check_series(x: Tensor, name: str) -> Tensor:
    """`x` [N, T, C] detached as float32 on the CPU, after checking that every value is finite."""
    # Series made under inference mode (an evaluation hook) cannot enter autograd; a copy made outside can.
    with torch.inference_mode(False):
        x = x.detach().to("cpu", torch.float32).clone()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(dim=1).sum())
        raise ValueError(f"{name} series contain NaN or Inf in {bad} of {x.shape[0]} series")
    return x


def default_hidden(channels: int) -> int:
    """Hidden size of the post-hoc GRUs: TimeGAN's C // 2, but at least MIN_HIDDEN."""
    return max(MIN_HIDDEN, channels // 2)


class PostHocGRU(nn.Module):
    """One GRU layer and a linear read-out: of the last hidden state (`per_step=False`) or of every step."""

    def __init__(self, channels: int, hidden: int, outputs: int, per_step: bool) -> None:
        super().__init__()
        self.rnn = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)
        self.per_step = per_step

    def forward(self, x: Tensor) -> Tensor:
        states, last = self.rnn(x)
        return self.head(states if self.per_step else last[-1])


@contextmanager
def _training_context(seed: int) -> Iterator[None]:
    """Seeded, with gradients, outside inference mode and autocast (an evaluation hook's), the caller's
    random stream untouched: a score depends on none of them."""
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast("cpu", enabled=False),
    ):
        torch.manual_seed(seed)
        yield


def discriminative_score(
    real: Tensor,
    generated: Tensor,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    hidden: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> float:
    """TimeGAN's |accuracy - 0.5| of a post-hoc GRU classifier of real vs generated, both cut to one seeded
    size (chance is 0.5), trained on 80% for `steps` Adam steps, scored on the other 20%."""
    real = check_series(real, "real")
    generated = check_series(generated, "generated")
    n = min(len(real), len(generated))
    # Rounded down, as TimeGAN's train_test_divide: two series give one to train on and one to test on.
    n_train = int(TRAIN_FRACTION * n)
    if n_train < 1 or n - n_train < 1:
        raise ValueError(f"discriminative_score needs at least 2 series per set, got {n}")
    draws = torch.Generator().manual_seed(seed)
    batch = min(batch_size, n_train)
    # Every tensor that enters the GRU is made inside the context, so none is an inference tensor.
    with _training_context(seed):
        real = real[torch.randperm(len(real), generator=draws)[:n]]
        generated = generated[torch.randperm(len(generated), generator=draws)[:n]]
        train_real, test_real = real[:n_train], real[n_train:]
        train_fake, test_fake = generated[:n_train], generated[n_train:]
        targets = torch.cat([torch.ones(batch), torch.zeros(batch)])
        model = PostHocGRU(real.shape[2], hidden or default_hidden(real.shape[2]), 1, per_step=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULT_LR)
        for _ in range(steps):
            # Without replacement within a batch, as TimeGAN's batch_generator draws.
            pick_real = torch.randperm(n_train, generator=draws)[:batch]
            pick_fake = torch.randperm(n_train, generator=draws)[:batch]
            logits = model(torch.cat([train_real[pick_real], train_fake[pick_fake]])).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step()
        model.eval()
        with torch.no_grad():
            correct = int((_batched(model, test_real).squeeze(1) > 0).sum())
            correct += int((_batched(model, test_fake).squeeze(1) <= 0).sum())
    accuracy = correct / (len(test_real) + len(test_fake))
    return abs(accuracy - 0.5)


def predictive_score(
    synthetic: Tensor,
    real: Tensor,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    on_step: Callable[[], None] | None = None,
) -> float:
    """Train on synthetic, test on real: MAE on `real` of a GRU trained on `synthetic` to predict every
    channel at t+1 from all channels at steps <= t (a univariate series has no others to predict from)."""
    synthetic = check_series(synthetic, "synthetic")
    real = check_series(real, "real")
    draws = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(synthetic))
    channels = synthetic.shape[2]
    with _training_context(seed):
        model = PostHocGRU(channels, default_hidden(channels), channels, per_step=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULT_LR)
        for _ in range(steps):
            x = synthetic[torch.randperm(len(synthetic), generator=draws)[:batch]]
            loss = F.l1_loss(model(x[:, :-1]), x[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step()
        model.eval()
        with torch.no_grad():
            error = sum(
                float((model(chunk[:, :-1]) - chunk[:, 1:]).abs().sum()) for chunk in real.split(EVAL_BATCH)
            )
    return error / real[:, 1:].numel()


def out_of_range_share(series: Tensor, train_range: Tensor) -> float:
    """Share of `series` [N, T, C] with any value outside `train_range` [2, C] (per channel low, high)."""
    low, high = train_range
    outside = (series < low - RANGE_ROUNDING) | (series > high + RANGE_ROUNDING)
    return outside.flatten(1).any(dim=1).float().mean().item()


def _batched(model: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([model(chunk) for chunk in x.split(EVAL_BATCH)])


def score_sequences(
    real: Tensor,
    split: str,
    *,
    generated: Tensor | None = None,
    features: SequenceFeatures | None = None,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    fits: int = 1,
    train_range: Tensor | None = None,
    train_series: Tensor | None = None,
) -> GenerativeScore:
    """Every sequence metric that applies to `generated` against `real` series of `split`: the quick ones,
    `out_of_range` with `train_range`, the wide ones with `train_series`, feature metrics with `features`."""
    real = check_series(real, "real")
    values: dict[str, float] = {}
    if generated is not None:
        generated = check_series(generated, "generated")
        # Silent when quick; a long one (a final test on many long series on a CPU) says where it is.
        progress = evaluation_progress(
            f"{split}: fitting the post-hoc GRUs of the discriminative and predictive scores",
            2 * steps * fits + (0 if train_series is None else 2 * steps),
            "step",
        )
        scorers = {
            "discriminative_quick": lambda fit_seed: discriminative_score(
                real, generated, seed=fit_seed, steps=steps, on_step=progress.advance
            ),
            "predictive_quick": lambda fit_seed: predictive_score(
                generated, real, seed=fit_seed, steps=steps, on_step=progress.advance
            ),
        }
        for name, scorer in scorers.items():
            scores = [scorer(seed + fit) for fit in range(fits)]
            values[name] = statistics.fmean(scores)
            if fits > 1:
                # Their population std (NumPy's np.std): how far to trust the mean.
                values[f"{name}_std"] = statistics.pstdev(scores)
        if train_range is not None:
            values["out_of_range"] = out_of_range_share(generated, train_range)
            values["out_of_range_real"] = out_of_range_share(real, train_range)
        if train_series is not None:
            for name, other in (
                ("discriminative_wide", generated),
                ("discriminative_wide_real", train_series),
            ):
                values[name] = discriminative_score(
                    real, other, seed=seed, steps=steps, hidden=WIDE_HIDDEN, on_step=progress.advance
                )
        if features is not None:
            with torch.no_grad():
                real_features, generated_features = features(real), features(generated)
            computed = score_feature_sets(real_features, generated_features, seed=seed)
            values.update({metric_name(key, features.name): value for key, value in computed.items()})
    return GenerativeScore(
        values=values,
        split=split,
        n_real=len(real),
        n_fake=len(generated) if generated is not None else 0,
        backbone=features.description if features is not None and generated is not None else None,
    )
