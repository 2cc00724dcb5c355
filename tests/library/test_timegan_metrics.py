"""TimeGAN's scores (lightning_genae.metrics.timegan) and Sines set (datamodules.timegan_sines) against
independent computations with the reference code's semantics, on tiny data and iteration counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_genae.datamodules import DATASETS, build_datamodule
from lightning_genae.datamodules.timegan_sines import timegan_sine_series
from lightning_genae.metrics import timegan
from lightning_genae.metrics.timegan import (
    discriminative_score_timegan,
    hidden_size,
    predictive_score_timegan,
    timegan_scores,
    train_test_divide,
)
from lightning_genae.seeding import int_seed

pytestmark = pytest.mark.quick


def _smooth(n: int, seed: int, channels: int = 4, seq_len: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    steps = torch.arange(seq_len).view(1, seq_len, 1)
    freq = 0.3 * torch.rand(n, 1, channels, generator=gen)
    return (torch.sin(freq * steps + torch.rand(n, 1, channels, generator=gen)) + 1) / 2


def test_sines_match_the_reference_generation() -> None:
    x = timegan_sine_series(50, 24, 5).double().numpy()
    assert x.shape == (50, 24, 5)
    # Recover each channel's frequency and phase from its first two steps and rebuild the series as
    # data_loading.py does: (sin(f t + p) + 1) / 2 with f, p in [0, 0.1].
    phase = np.arcsin(2 * x[:, 0] - 1)
    freq = np.arcsin(2 * x[:, 1] - 1) - phase
    assert phase.min() >= -1e-6 and phase.max() <= 0.1 + 1e-6
    assert freq.min() >= -1e-5 and freq.max() <= 0.1 + 1e-5
    rebuilt = (np.sin(freq[:, None] * np.arange(24)[None, :, None] + phase[:, None]) + 1) / 2
    np.testing.assert_allclose(x, rebuilt, atol=1e-5)
    assert torch.equal(timegan_sine_series(50, 24, 5), timegan_sine_series(50, 24, 5))


def test_timegan_sines_is_a_registered_dataset_of_the_benchmark_shape() -> None:
    assert DATASETS["timegan_sines"].data_kind == "sequence"
    dm = build_datamodule("timegan_sines", data_dir=".")
    assert dm.data_shape == (24, 5)
    assert DATASETS["timegan_sines"].module is type(dm)


def test_hidden_size_is_half_the_channels_rounded_down() -> None:
    assert [hidden_size(c) for c in (2, 3, 5, 8)] == [1, 1, 2, 4]
    with pytest.raises(ValueError, match="at least 2 channels"):
        hidden_size(1)


def test_train_test_divide_cuts_at_int_eighty_percent() -> None:
    for count in (10, 11, 99):
        train, test = train_test_divide(count, torch.Generator().manual_seed(0))
        assert len(train) == int(count * 0.8) and len(test) == count - int(count * 0.8)
        assert sorted(torch.cat([train, test]).tolist()) == list(range(count))


def test_predictive_reads_other_channels_up_to_t_minus_1_and_targets_the_last() -> None:
    real, fake = _smooth(64, 0), _smooth(64, 10)
    base = predictive_score_timegan(real, fake, seed=3, iterations=30)
    # Neither inputs nor targets: the last channel at step 0 and the other channels at the last step.
    unused = fake.clone()
    unused[:, 0, -1] = 0.0
    unused[:, -1, :-1] = 0.0
    assert predictive_score_timegan(real, unused, seed=3, iterations=30) == base
    # The target (last channel, steps 1..T-1) changes what is learnt.
    target = fake.clone()
    target[:, 1:, -1] = 1 - target[:, 1:, -1]
    assert predictive_score_timegan(real, target, seed=3, iterations=30) != base
    inputs = fake.clone()
    inputs[:, :-1, 0] = 0.0
    assert predictive_score_timegan(real, inputs, seed=3, iterations=30) != base


def test_predictive_score_of_a_copy_is_the_real_on_real_score() -> None:
    real = _smooth(80, 1)
    assert predictive_score_timegan(real, real.clone(), seed=5, iterations=30) == predictive_score_timegan(
        real, real, seed=5, iterations=30
    )


def test_predictive_score_is_the_mae_of_an_independent_predictor() -> None:
    """Zero iterations: the score is the MAE of the initial sigmoid predictor, recomputed here per series
    and averaged over series as predictive_metrics.py does."""
    real = _smooth(20, 2, channels=5)
    score = predictive_score_timegan(real, _smooth(20, 3, channels=5), seed=7, iterations=0)
    net = timegan._seeded_net(4, 2, 7)
    with torch.no_grad():
        out, _ = net.rnn(real[:, :-1, :4])
        pred = torch.sigmoid(net.out(out))[..., 0]
    per_series = [(pred[i] - real[i, 1:, 4]).abs().mean().item() for i in range(20)]
    assert score == pytest.approx(sum(per_series) / 20, abs=1e-6)


def _tf1_gru_cell_states(
    series: np.ndarray,
    gate_kernel: np.ndarray,
    gate_bias: np.ndarray,
    candidate_kernel: np.ndarray,
    candidate_bias: np.ndarray,
) -> np.ndarray:
    """TensorFlow 1's GRUCell.call, step by step in NumPy: gates over [x, h], the reset gate applied to the
    state before the candidate's product, the update gate keeping the old state."""
    hidden = candidate_bias.shape[0]
    state = np.zeros((series.shape[0], hidden))
    states = []
    for step in range(series.shape[1]):
        x = series[:, step]
        gates = 1 / (1 + np.exp(-(np.concatenate([x, state], 1) @ gate_kernel + gate_bias)))
        reset, update = gates[:, :hidden], gates[:, hidden:]
        candidate = np.tanh(np.concatenate([x, reset * state], 1) @ candidate_kernel + candidate_bias)
        state = update * state + (1 - update) * candidate
        states.append(state)
    return np.stack(states, 1)


def test_post_hoc_gru_computes_tensorflow_1s_gru_cell() -> None:
    """Random weights in every parameter (not the initial ones), checked against the cell's equations."""
    net = timegan._seeded_net(3, 2, 0)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for parameter in net.rnn.parameters():
            parameter.copy_(torch.from_numpy(rng.normal(size=tuple(parameter.shape))))
    series = _smooth(4, 1, channels=3, seq_len=6)
    with torch.no_grad():
        states, last = net.rnn(series)
    expected = _tf1_gru_cell_states(
        series.double().numpy(),
        *(
            p.detach().double().numpy()
            for p in (
                net.rnn.gate_kernel,
                net.rnn.gate_bias,
                net.rnn.candidate_kernel,
                net.rnn.candidate_bias,
            )
        ),
    )
    assert np.allclose(states.numpy(), expected, atol=1e-5)
    assert torch.equal(last, states[:, -1])


def test_post_hoc_gru_starts_as_tensorflow_1s_gru_cell_and_dense_layer() -> None:
    """Gate bias 1, candidate bias 0, Glorot-uniform kernels over the joined [input + state] shapes."""
    net = timegan._seeded_net(40, 20, 3)
    assert torch.equal(net.rnn.gate_bias, torch.ones(40))
    assert torch.equal(net.rnn.candidate_bias, torch.zeros(20))
    assert torch.equal(net.out.bias, torch.zeros(1))
    for kernel, fans in (
        (net.rnn.gate_kernel, 60 + 40),
        (net.rnn.candidate_kernel, 60 + 20),
        (net.out.weight, 21),
    ):
        # Uniform on +-sqrt(6 / (fan_in + fan_out)): its largest draw lies close to the bound.
        limit = math.sqrt(6 / fans)
        assert 0.8 * limit < kernel.abs().max() <= limit
    assert torch.equal(timegan._seeded_net(40, 20, 3).rnn.gate_kernel, net.rnn.gate_kernel)


def test_discriminative_score_identical_sets_near_zero_separable_sets_near_half() -> None:
    real = _smooth(200, 4)
    same = discriminative_score_timegan(real, real.clone(), seed=0, iterations=40)
    assert same <= 0.1
    separable = discriminative_score_timegan(real, real * 0.1, seed=0, iterations=150)
    assert separable >= 0.45


def test_discriminative_score_is_half_minus_accuracy_on_the_held_out_fifth() -> None:
    """At zero iterations every test series is scored by the initial net; recompute the accuracy over
    exactly the 20% each set's permutation leaves out."""
    real, fake = _smooth(30, 5), _smooth(40, 6) * 0.5
    score = discriminative_score_timegan(real, fake, seed=9, iterations=0)
    generator = torch.Generator().manual_seed(9)
    real_test = real[train_test_divide(30, generator)[1]]
    fake_test = fake[train_test_divide(40, generator)[1]]
    net = timegan._seeded_net(4, 2, 9)
    with torch.no_grad():
        p_real = torch.sigmoid(net.out(net.rnn(real_test)[1]))[:, 0]
        p_fake = torch.sigmoid(net.out(net.rnn(fake_test)[1]))[:, 0]
    accuracy = ((p_real > 0.5).sum() + (p_fake <= 0.5).sum()).item() / (len(real_test) + len(fake_test))
    assert score == pytest.approx(abs(0.5 - accuracy))


def test_each_repetition_fits_from_its_own_stream_and_they_report_population_std() -> None:
    real, fake = _smooth(40, 7), _smooth(40, 8)
    fits: list[None] = []
    scores = timegan_scores(
        real,
        fake,
        repetitions=2,
        seed=3,
        discriminative_iterations=5,
        predictive_iterations=5,
        on_fit=lambda: fits.append(None),
    )
    assert len(fits) == 4  # each score's two fits report their end
    assert scores.predictive[1] == predictive_score_timegan(
        real, fake, seed=int_seed(3, "timegan fit", 1), iterations=5
    )
    mean, std = scores.predictive_mean_std
    assert mean == pytest.approx(sum(scores.predictive) / 2)
    assert std == pytest.approx(abs(scores.predictive[0] - scores.predictive[1]) / 2)
    assert not math.isnan(scores.discriminative_mean_std[1])


def test_bad_inputs_are_refused() -> None:
    real = _smooth(10, 9)
    with pytest.raises(ValueError, match="generated series must be at least 2, of finite values"):
        predictive_score_timegan(real, real * float("nan"), iterations=0)
    with pytest.raises(ValueError, match="real series must be at least 2"):
        discriminative_score_timegan(real[:1], real, iterations=0)
    # Series in their own units (a target up to 13): a sigmoid never reaches them.
    with pytest.raises(
        ValueError, match=r"last channel \(the sigmoid predictor's target\) spans \[[0-9.]+, 13\]"
    ):
        predictive_score_timegan(real * 6 + 7, real, iterations=0)
