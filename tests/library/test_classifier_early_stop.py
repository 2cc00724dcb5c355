"""The feature classifier's training stops once validation accuracy stops rising, keeping its best epoch."""

import pytest
import torch
from torch import nn

import lightning_genae.metrics.classifier as classifier_lib

pytestmark = pytest.mark.quick


def _fit(
    monkeypatch, accuracies: list[float], patience: int | None, epochs: int
) -> tuple[list[float], nn.Module]:
    """Train a linear classifier on random uint8 inputs; the validation accuracy of epoch k is accuracies[k]
    (after the list's end, its last value), and each epoch's weights are marked in the model's bias."""
    inputs = torch.randint(
        0, 256, (8, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    labels = torch.arange(8) % 2
    validation = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    seen: list[float] = []

    def accuracy_over(net: nn.Module, blocks) -> float:
        if sum(len(labels) for _, labels in blocks) != len(validation):
            return 0.0  # the test split's, after training
        value = accuracies[min(len(seen), len(accuracies) - 1)]
        seen.append(value)
        with torch.no_grad():
            net[1].bias.fill_(len(seen))  # the epoch whose weights these are
        return value

    monkeypatch.setattr(classifier_lib, "accuracy_over", accuracy_over)
    splits = {"train": (inputs, labels), "val": (validation, labels[:3]), "test": (inputs, labels)}
    model, _ = classifier_lib.fit_best_on_validation(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
        lambda split, index: (splits[split][0][index], splits[split][1][index]),
        {split: len(labels) for split, (_, labels) in splits.items()},
        seed=0, epochs=epochs, batch_size=4, max_lr=1e-3, weight_decay=0.0, patience=patience,
    )  # fmt: skip
    return seen, model


def test_training_stops_after_patience_epochs_without_a_rise_and_keeps_the_best_latest_epoch(
    monkeypatch, capsys
):
    seen, model = _fit(monkeypatch, [0.5, 0.7, 0.6, 0.7, 0.65, 0.7, 0.9], patience=3, epochs=20)
    # Best 0.7 first reached at epoch 2; epochs 3-5 do not rise above it, so training stops after epoch 5.
    assert len(seen) == 5
    assert model[1].bias[0].item() == 4  # the later of the tied best epochs (2 and 4)
    assert (
        "stopped after epoch 5/20: validation accuracy has not risen for 3 epochs" in capsys.readouterr().err
    )


@pytest.mark.parametrize(("patience", "epochs"), [(None, 8), (3, 4)])
def test_without_patience_or_with_none_spent_every_epoch_trains(monkeypatch, capsys, patience, epochs):
    seen, _ = _fit(monkeypatch, [0.5], patience=patience, epochs=epochs)
    assert len(seen) == epochs
    assert "stopped" not in capsys.readouterr().err
