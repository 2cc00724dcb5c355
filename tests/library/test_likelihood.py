"""The importance-sampled log-likelihood against a model whose marginal likelihood is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_genae.metrics.likelihood import (
    gaussian_log_density,
    importance_sampled_log_likelihood,
    subset_corrected_mean,
)


def linear_gaussian(seed: int = 0, latent: int = 3, dim: int = 5, noise_std: float = 0.5):
    """x = W z + b + e, z ~ N(0, I), e ~ N(0, s^2 I), with orthogonal columns of W so that the exact
    posterior is diagonal: p(x) = N(b, W W^T + s^2 I) and q*(z|x) = N(W^T (x - b) / (s^2 d), 1 / d),
    d = 1 + |w_j|^2 / s^2 per latent dimension."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, latent, generator=generator, dtype=torch.float64))
    weights = basis * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)[:latent]
    bias = torch.randn(dim, generator=generator, dtype=torch.float64)
    return weights, bias, noise_std


def exact_log_likelihood(x, weights, bias, noise_std):
    covariance = weights @ weights.T + noise_std**2 * torch.eye(len(bias), dtype=torch.float64)
    return torch.distributions.MultivariateNormal(bias, covariance).log_prob(x)


def decoder_log_likelihood(x, weights, bias, noise_std):
    variance = torch.full_like(x, 2 * math.log(noise_std))

    def log_likelihood(z):
        return gaussian_log_density(x, z @ weights.T + bias, variance.expand(*z.shape[:-1], -1))

    return log_likelihood


def data(weights, bias, noise_std, n=16, seed=1):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, weights.shape[1], generator=generator, dtype=torch.float64)
    return (
        z @ weights.T + bias + noise_std * torch.randn(n, len(bias), generator=generator, dtype=torch.float64)
    )


def test_the_exact_posterior_gives_the_exact_log_likelihood_for_any_k():
    weights, bias, noise_std = linear_gaussian()
    x = data(weights, bias, noise_std)
    precision = 1 + (weights**2).sum(0) / noise_std**2
    mean = (x - bias) @ weights / noise_std**2 / precision
    log_var = (-precision.log()).expand_as(mean)
    exact = exact_log_likelihood(x, weights, bias, noise_std)
    for k in (1, 7, 100):
        estimate = importance_sampled_log_likelihood(
            mean,
            log_var,
            decoder_log_likelihood(x, weights, bias, noise_std),
            k,
            chunk=30,
            generator=torch.Generator().manual_seed(k),
        )
        torch.testing.assert_close(estimate, exact, rtol=0, atol=1e-9)


def test_a_wrong_posterior_gives_a_lower_bound_that_tightens_with_k():
    weights, bias, noise_std = linear_gaussian()
    x = data(weights, bias, noise_std, n=64)
    exact = exact_log_likelihood(x, weights, bias, noise_std).mean().item()
    mean = torch.zeros(len(x), weights.shape[1], dtype=torch.float64)  # the prior as q: a poor proposal
    log_var = torch.zeros_like(mean)
    gaps = []
    for k in (1, 10, 1000, 20000):
        estimate = (
            importance_sampled_log_likelihood(
                mean,
                log_var,
                decoder_log_likelihood(x, weights, bias, noise_std),
                k,
                chunk=2000,
                generator=torch.Generator().manual_seed(0),
            )
            .mean()
            .item()
        )
        gaps.append(exact - estimate)
    assert all(gap > 0 for gap in gaps[:3]), gaps
    assert gaps == sorted(gaps, reverse=True), gaps
    assert gaps[-1] < 0.1 * gaps[0] and gaps[-1] < 0.5


def test_a_bernoulli_model_matches_enumeration_of_its_two_latent_states_limit():
    # One binary pixel whose logit is z: p(x=1) = E_z[sigmoid(z)] = 0.5 by symmetry, for z ~ N(0, 1).
    x = torch.tensor([[1.0], [0.0]], dtype=torch.float64)

    def log_likelihood(z):
        logits = z[..., 0]
        return -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x[:, 0].expand_as(logits), reduction="none"
        )

    estimate = importance_sampled_log_likelihood(
        torch.zeros(2, 1),
        torch.zeros(2, 1),
        log_likelihood,
        200000,
        chunk=50000,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(
        estimate, torch.full((2,), math.log(0.5), dtype=torch.float64), rtol=0, atol=5e-3
    )


def test_the_vae_logs_its_importance_sampled_nll_named_with_k_and_it_beats_the_elbo():
    from lightning_genae.errors import ConfigError, DataError
    from lightning_genae.metrics.names import direction
    from lightning_genae.models.options import VAEOptions
    from lightning_genae.models.vae import VAEModule

    assert direction("test/nll_is5000").name == "LOWER"
    with pytest.raises(ConfigError, match="nll_samples estimates a Bernoulli likelihood"):
        VAEOptions.parse({"recon_loss": "mse", "nll_samples": 10})
    torch.manual_seed(0)
    model = VAEModule((1, 16, 16), latent_dim=4, width=8, nll_samples=64)
    images = (torch.rand(6, 1, 16, 16) > 0.5).float() * 2 - 1
    generator = torch.Generator().manual_seed(0)
    log_px = model.log_likelihood(images, 64, generator)
    with pytest.raises(DataError, match="not binary pixels read as -1 and 1"):
        model.log_likelihood(images * 0.5, 64, generator)
    # The single-draw estimate's mean is the ELBO; more draws can only tighten it on average.
    elbos = torch.stack(
        [model.log_likelihood(images, 1, torch.Generator().manual_seed(seed)) for seed in range(200)]
    ).mean(0)
    assert log_px.shape == (6,) and (log_px > elbos).all()


def test_the_subset_corrected_mean_of_a_cheap_k_recovers_the_exact_log_likelihood():
    # A proposal shifted and widened off the exact posterior leaves k = 10 about 3 nats short of log p(x);
    # k = 20,000 on a random quarter of the examples corrects the k = 10 mean of all of them to the exact
    # mean, within its standard error.
    weights, bias, noise_std = linear_gaussian()
    x = data(weights, bias, noise_std, n=400)
    exact = exact_log_likelihood(x, weights, bias, noise_std).mean().item()
    precision = 1 + (weights**2).sum(0) / noise_std**2
    mean = (x - bias) @ weights / noise_std**2 / precision + 1.0
    log_var = (1.5 - precision.log()).expand_as(mean)

    def estimate(rows, k, seed):
        return importance_sampled_log_likelihood(
            mean[rows],
            log_var[rows],
            decoder_log_likelihood(x[rows], weights, bias, noise_std),
            k,
            chunk=5000,
            generator=torch.Generator().manual_seed(seed),
        )

    cheap = estimate(torch.arange(len(x)), 10, 0)
    subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(5))[:100]
    figure, standard_error = subset_corrected_mean(cheap, subset, estimate(subset, 20000, 1))
    assert exact - cheap.mean().item() > 2.5  # the cheap estimate alone is far off
    assert 0 < standard_error < 0.5
    assert abs(figure - exact) < 2 * standard_error


def test_the_subset_corrected_mean_by_hand():
    # Cheap values of 5 examples, their mean -2.4; the costly values of examples 3 and 0 exceed the cheap
    # ones by 1.0 and 0.5: figure -2.4 + 0.75 = -1.65; the differences' std is sqrt(0.125), so the
    # standard error is sqrt(0.125) / sqrt(2) * sqrt(1 - 2 / 5) = sqrt(0.0375).
    cheap = torch.tensor([-3.0, -1.0, -2.0, -4.0, -2.0])
    figure, standard_error = subset_corrected_mean(cheap, torch.tensor([3, 0]), torch.tensor([-3.0, -2.5]))
    assert figure == pytest.approx(-1.65)
    assert standard_error == pytest.approx(math.sqrt(0.0375))


def test_the_subset_corrected_mean_over_every_example_is_the_costly_mean_exactly():
    cheap = torch.tensor([-3.0, -1.0, -2.0, -5.0])
    costly = torch.tensor([-2.5, -0.75, -1.0, -4.0])
    figure, standard_error = subset_corrected_mean(cheap, torch.tensor([2, 0, 3, 1]), costly[[2, 0, 3, 1]])
    assert figure == pytest.approx(costly.mean().item()) and standard_error == 0.0


def test_the_estimate_changes_no_other_number_and_the_mse_is_the_posterior_means(
    tmp_path, mnist_data_dir, monkeypatch
):
    """Its draws came from the random state the next test batches draw their codes from, so asking for it
    moved test/elbo, recon, loss and mse."""
    import json

    from lightning_genae.checkpoint import RunCheckpoint
    from lightning_genae.experiment.cli import main
    from lightning_genae.models import VAEModule

    # The image metrics would first train a feature classifier on 55,000 images; this test is about the NLL.
    monkeypatch.setattr("lightning_genae.api.generative_metrics", lambda *args: None)
    data = ["--data", "binarized_mnist", "--data-dir", str(mnist_data_dir), "--train-size", "256"]
    run = ["--model", "vae", *data, "--width", "8", "--latent-dim", "4", "--recon-loss", "bce"]
    run += ["--max-steps", "4", "--eval-every", "4", "--eval-samples", "60", "--seed", "1"]
    assert main([*run, "--output", str(tmp_path / "plain")]) == 0
    assert main([*run, "--nll-samples", "5", "--output", str(tmp_path / "nll")]) == 0
    plain, nll = (
        json.loads((tmp_path / name / "summary.json").read_text())["final_metrics"]
        for name in ("plain", "nll")
    )
    assert "test/nll_is5" in nll
    assert {key: nll[key] for key in plain} == plain
    # Validation and test mse: of the posterior mean's reconstruction.
    from lightning_genae.datamodules import build_datamodule

    model = RunCheckpoint.load(tmp_path / "plain" / "checkpoints" / "last.ckpt", "test").restore(
        VAEModule, "test"
    )
    datamodule = build_datamodule("binarized_mnist", data_dir=mnist_data_dir)
    images = datamodule.to_model_range(datamodule.split_tensors("test")[0])
    with torch.no_grad():
        mean, _ = model.posterior(images)
        expected = torch.nn.functional.mse_loss(model.decode(mean), images).item()
    assert plain["test/mse"] == pytest.approx(expected, rel=1e-4)


def test_a_likelihood_of_grey_pixels_is_refused_before_the_run_starts(tmp_path, capsys):
    """A Bernoulli decoder's score of grey levels is no likelihood: its floor is the pixels' own entropy."""
    from lightning_genae.experiment.cli import main

    run_dir = tmp_path / "vae"
    args = ["--model", "vae", "--data", "digits", "--nll-samples", "8", "--output", str(run_dir)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --nll-samples estimates the likelihood of binary pixels, and --data digits has grey levels; "
        "use --data binarized_mnist, or drop --nll-samples"
    )
    assert not run_dir.exists()


def test_the_likelihood_of_a_vae_in_training_mode_is_its_eval_modes_and_moves_nothing():
    # In training mode batch norm scored each image by the others' statistics and moved its running ones.
    from lightning_genae.models.vae import VAEModule

    torch.manual_seed(0)
    model = VAEModule((1, 16, 16), latent_dim=4, width=8)
    images = (torch.rand(6, 1, 16, 16) > 0.5).float() * 2 - 1
    with torch.no_grad():  # running statistics away from their initial 0 and 1
        model.decoder(torch.randn(32, 4) * 3)
        model.encoder(torch.rand(32, 1, 16, 16))
    model.eval()
    in_eval = model.log_likelihood(images, 16, torch.Generator().manual_seed(3))
    model.train()
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    in_training = model.log_likelihood(images, 16, torch.Generator().manual_seed(3))
    torch.testing.assert_close(in_training, in_eval)
    assert model.training and all(part.training for part in model.modules())
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_the_gaussian_vaes_elbo_is_a_bound_on_the_images_log_density(monkeypatch):
    # The mse loss is -log N(x; decoded, 1/2) without its constant; the logged elbo keeps it.
    from lightning_genae.models.vae import VAEModule

    torch.manual_seed(0)
    model = VAEModule((1, 16, 16), latent_dim=4, width=8, recon_loss="mse").eval()
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    monkeypatch.setattr("lightning_genae.models.vae.reparameterize", lambda mean, log_var: mean)
    logged = {}
    monkeypatch.setattr(model, "log_split_means", lambda values, items: logged.update(values))
    monkeypatch.setattr(model, "log_dict", lambda *args, **kwargs: None)
    with torch.no_grad():
        model.model_step((images, torch.zeros(5)), "val")
        mean, log_var = model.posterior(images)
        decoded = model.decoder(mean)
        likelihood = torch.distributions.Normal(decoded, math.sqrt(0.5)).log_prob(images).flatten(1).sum(1)
        posterior = torch.distributions.Normal(mean, (0.5 * log_var).exp())
        prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
        kl = torch.distributions.kl_divergence(posterior, prior).sum(1)
    assert logged["val/elbo"].item() == pytest.approx((likelihood - kl).mean().item(), rel=1e-5)
