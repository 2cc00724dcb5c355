"""An encoder's codes beside PCA's of the same dimension: linear-probe accuracy and reconstruction MSE."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from lightning_genae.datamodules.base import map_images, to_model_range

MAX_PROBE_TRAIN = 10_000


def probe_train_indices(num_train: int, seed: int) -> Tensor:
    """The training items a probe fits on: all, or MAX_PROBE_TRAIN of them drawn by `seed`."""
    if num_train <= MAX_PROBE_TRAIN:
        return torch.arange(num_train)
    return torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))[:MAX_PROBE_TRAIN]


def linear_probe_accuracy(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
    seed: int = 0,
) -> float:
    """Test accuracy of a standardised multinomial logistic regression fitted on the training codes."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    with warnings.catch_warnings():
        # A probe that has not fully converged in 2000 iterations still gives a fair comparison.
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_codes, train_labels)
    return float((probe.predict(test_codes) == test_labels).mean())


def representation_metrics(
    encode: Callable[[Tensor], Tensor],
    train: tuple[Tensor, Tensor],
    test: Iterable[tuple[Tensor, Tensor]],
    latent_dim: int,
    device: torch.device,
    seed: int = 0,
    prepare: Callable[[Tensor], Tensor] = to_model_range,
) -> dict[str, float]:
    """Probe accuracy of the model's and PCA's codes, and PCA's test reconstruction MSE (model units), from
    (stored items, labels) made model input by `prepare`; of the test blocks only codes are kept."""
    train_images, train_labels = train
    results: dict[str, float] = {}

    flat_train = prepare(train_images).flatten(1).numpy()
    components = min(latent_dim, *flat_train.shape)
    pca = PCA(n_components=components, random_state=seed).fit(flat_train)
    pca_test, model_test, test_labels, squared_errors = [], [], [], []
    for images, labels in test:
        flat = prepare(images).flatten(1).numpy()
        pca_test.append(pca.transform(flat))
        # A block's mean times its element count: exact, so a split in one block gives its mean unchanged.
        squared_errors.append((float(((pca.inverse_transform(pca_test[-1]) - flat) ** 2).mean()), flat.size))
        if (labels >= 0).all():  # the codes serve the probe alone, which needs every label
            model_test.append(map_images(encode, images, device, prepare=prepare).numpy())
        test_labels.append(labels)
    results["pca_mse"] = sum(mean * size for mean, size in squared_errors) / sum(s for _, s in squared_errors)

    # A probe needs two classes in each split: on a one-class test split, always naming it would score 1.
    y_train, y_test = train_labels.numpy(), torch.cat(test_labels).numpy()
    if all((labels >= 0).all() and len(np.unique(labels)) > 1 for labels in (y_train, y_test)):
        model_train = map_images(encode, train_images, device, prepare=prepare).numpy()
        results["probe_acc"] = linear_probe_accuracy(
            model_train, y_train, np.concatenate(model_test), y_test, seed
        )
        results["pca_probe_acc"] = linear_probe_accuracy(
            pca.transform(flat_train), y_train, np.concatenate(pca_test), y_test, seed
        )
        # The items the two probes learnt and were scored on; without a probe there is nothing to count.
        results["probe_n_train"] = float(len(train_images))
        results["probe_n_test"] = float(len(y_test))
    return results
