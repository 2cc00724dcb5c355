"""ablation.png's overfitting-signal panels (ablation/curves.py): D on training vs validation reals, r_t."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_ablation import write_run

from lightning_genae.experiment.ablation import curves, runs, summarize
from lightning_genae.experiment.ablation.curves import ADA_RT

EVALUATED = (500, 1000, 1500)


def add_columns(run_dir: Path, columns: dict[str, dict[int, float]]) -> None:
    """Rows of extra metrics (name -> step -> value) appended to the run's metrics.csv, as a run logs them."""
    path = run_dir / "metrics.csv"
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    for name, curve in columns.items():
        rows += [{"step": step, name: value} for step, value in curve.items()]
    keys = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def logit_signals(seed: int, gap: float) -> dict[str, dict[int, float]]:
    """D's clean scores rising on training reals and falling on validation reals by `gap` per evaluation."""
    return {
        "val/d_logit_train": {step: seed + gap * i for i, step in enumerate(EVALUATED)},
        "val/d_logit_val": {step: seed - gap * i for i, step in enumerate(EVALUATED)},
        "val/d_sign_train": {step: 0.1 * i for i, step in enumerate(EVALUATED)},
        "val/d_sign_val": {step: -0.1 * i for i, step in enumerate(EVALUATED)},
    }


def panels_by_title(root: Path) -> dict[str, dict]:
    cells = runs.load_runs(root)
    return {panel.ylabel: lines for panel, lines in curves.signal_curves(cells)}


def test_logit_and_sign_panels_show_each_augmentations_mean_over_seeds_and_r_t_where_logged(tmp_path):
    for seed in (0, 1):
        add_columns(write_run(tmp_path, "none", 1000, seed, 20.0), logit_signals(seed, gap=1.0))
        adaptive = {**logit_signals(seed, gap=0.25), ADA_RT: {100: 0.5 + seed, 200: 0.7, 300: 0.9}}
        add_columns(write_run(tmp_path, "ada", 1000, seed, 18.0), adaptive)
    panels = panels_by_title(tmp_path)
    assert set(panels) == {"mean logit", "mean sign"}  # no energies were logged
    none_key, ada_key = ((0, 1000), 1000, "none"), ((0, 1000), 1000, "ada")
    train = panels["mean logit"]["val/d_logit_train"][none_key]
    assert train.steps == list(EVALUATED) and train.n == 2
    assert train.mean == pytest.approx([0.5, 1.5, 2.5])  # seeds 0 and 1 averaged per step
    assert panels["mean logit"]["val/d_logit_val"][ada_key].mean == pytest.approx([0.5, 0.25, 0.0])
    rt = panels["mean sign"][ADA_RT]
    assert set(rt) == {ada_key} and rt[ada_key].mean == pytest.approx([1.0, 0.7, 0.9])
    assert np.allclose(panels["mean sign"]["val/d_sign_val"][none_key].mean, [0.0, -0.1, -0.2])


def test_energies_get_their_own_panel(tmp_path):
    energies = {
        "val/d_energy_train": {step: 0.3 - 0.1 * i for i, step in enumerate(EVALUATED)},
        "val/d_energy_val": {step: 0.3 for step in EVALUATED},
    }
    add_columns(write_run(tmp_path, "none", None, 0, 20.0), energies)
    panels = panels_by_title(tmp_path)
    assert list(panels) == ["mean energy (lower: judged real)"]
    curve = panels["mean energy (lower: judged real)"]["val/d_energy_train"][((1, 0), None, "none")]
    assert curve.mean == pytest.approx([0.3, 0.2, 0.1])


def test_the_png_gains_a_panel_per_signal_and_stays_one_panel_without_signals(tmp_path):
    plain, signalled = tmp_path / "plain", tmp_path / "signalled"
    write_run(plain, "none", 1000, 0, 20.0)
    add_columns(write_run(signalled, "none", 1000, 0, 20.0), logit_signals(0, gap=1.0))
    assert panels_by_title(plain) == {}
    with Image.open(summarize(plain)["png"]) as one, Image.open(summarize(signalled)["png"]) as three:
        assert three.width > 2 * one.width and three.height == one.height
