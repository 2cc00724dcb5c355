"""The command line end to end: run folder, resume, config re-runs, and one-line errors for bad input."""

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.error
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_caches import write_folder
from tiny import TINY_RUN

from lightning_genae.callbacks.checkpoints import BestCheckpoint
from lightning_genae.experiment import cli
from lightning_genae.experiment.cli import main
from lightning_genae.models import MODELS

REPO = Path(__file__).resolve().parents[2]
TINY = TINY_RUN


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.quick
def test_gan_run_writes_the_complete_run_folder(tmp_path):
    run_dir = tmp_path / "gan"
    code = main(
        ["--model", "gan", *TINY, "--max-steps", "6", "--output", str(run_dir), "--logger", "csv,tensorboard"]
    )
    assert code == 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"] == "gan" and config["max_steps"] == 6 and config["lr"] == 5e-4
    assert config["output"] is None, "a re-run from config.yaml must not write into this folder"
    summary = read_summary(run_dir)
    assert summary["global_step"] == 6
    assert summary["seed"] == 0 and "cpu" in summary["device"]
    assert summary["versions"]["torch"] == torch.__version__.split("+")[0] or summary["versions"]["torch"]
    from lightning_genae.source import source_revision

    assert summary["source"] == source_revision(), "the clone's commit, or None for an installed copy"
    assert {"train/loss_d", "train/loss_g"} <= set(summary["final_metrics"])
    rows = read_metrics(run_dir)
    assert rows and all(float(row["train/loss_d"]) >= 0 for row in rows if row.get("train/loss_d"))
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 12, "Lightning counts both optimizer steps of each GAN iteration"
    assert last["genae_config"]["model"] == "gan"
    grids = sorted(p.name for p in (run_dir / "images").glob("samples_*.png"))
    assert grids == ["samples_step0000003.png", "samples_step0000006.png"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_ae_run_keeps_best_checkpoint_and_reports_test_metrics(tmp_path):
    run_dir = tmp_path / "ae"
    assert main(["--model", "ae", *TINY, "--max-steps", "6", "--output", str(run_dir)]) == 0
    summary = read_summary(run_dir)
    assert {"val/loss", "val/mse", "test/loss", "test/mse"} <= set(summary["final_metrics"])
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "images").glob("reconstructions_step*.png"))
    assert not list((run_dir / "images").glob("samples_*.png")), "a plain AE has no prior to sample from"
    val_rows = [row for row in read_metrics(run_dir) if row.get("val/loss")]
    assert [int(row["step"]) for row in val_rows][:2] == [3, 6]


@pytest.mark.slow
def test_resume_last_continues_at_the_right_step(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["--model", "gan", *TINY, "--max-steps", "4", "--output", str(run_dir)]) == 0
    # The model and data come from the checkpoint; only the longer budget is given.
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "7"]) == 0
    summary = read_summary(run_dir)
    assert summary["global_step"] == 7 and summary["model"] == "gan"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 14
    train_steps = [int(row["step"]) for row in read_metrics(run_dir) if row.get("train/loss_d")]
    # Rows every 3 iterations plus each run's final batch: 2, 3 from the first run, 5, 6 after resuming.
    assert train_steps == [2, 3, 5, 6]
    # The finished budget's final evaluation stays in the history beside the extended run's own.
    test_steps = [int(row["step"]) for row in read_metrics(run_dir) if row.get("test/fd_classifier")]
    assert test_steps == [4, 7]


def test_a_resume_past_an_evaluated_checkpoint_says_its_eval_json_is_of_older_weights(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["--model", "ae", *TINY, "--max-steps", "3", "--output", str(run_dir)]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(last)]) == 0
    capsys.readouterr()
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "5"]) == 0
    assert f"{run_dir / 'eval.json'} scored {last} at iteration 3; run --evaluate" in capsys.readouterr().out


def test_a_resume_at_another_ckpt_every_reads_the_checkpoints_state_without_a_warning(tmp_path, monkeypatch):
    from lightning_genae.callbacks.checkpoints import PeriodicLastCheckpoint

    run_dir = tmp_path / "run"
    assert (
        main(["--model", "ae", *TINY, "--max-steps", "3", "--ckpt-every", "3", "--output", str(run_dir)]) == 0
    )
    read = []
    original = PeriodicLastCheckpoint.load_state_dict
    monkeypatch.setattr(
        PeriodicLastCheckpoint,
        "load_state_dict",
        lambda self, state: read.append(state) or original(self, state),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (
            main(["--output", str(run_dir), "--resume", "last", "--max-steps", "4", "--ckpt-every", "2"]) == 0
        )
    assert not [
        warning for warning in caught if "callbacks used to create the checkpoint" in str(warning.message)
    ]
    (state,) = read
    assert state["last_model_path"] == str(run_dir / "checkpoints" / "last.ckpt")


def test_a_run_resumed_in_another_folder_keeps_its_periodic_checkpoint_in_last_ckpt(tmp_path):
    first, moved = tmp_path / "first", tmp_path / "moved"
    assert main(["--model", "ae", *TINY, "--max-steps", "3", "--output", str(first)]) == 0
    shutil.copytree(first, moved)
    # Lightning does not restore the checkpoint callback's state in another folder; a periodic save that
    # then found last.ckpt taken went to last-v1.ckpt, and a run killed after it resumed from iteration 3.
    assert main(["--output", str(moved), "--resume", "last", "--max-steps", "6"]) == 0
    names = sorted(path.name for path in (moved / "checkpoints").iterdir())
    assert not [name for name in names if name.startswith("last-")], names
    last = torch.load(moved / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6


def test_a_run_resumed_in_another_folder_keeps_its_best_score_and_best_ckpt(tmp_path):
    first, moved = tmp_path / "first", tmp_path / "moved"
    first_run = ["--model", "ae", *TINY, "--max-steps", "4", "--eval-every", "2", "--output", str(first)]
    assert main(first_run) == 0
    shutil.copytree(first, moved)
    # Without the best score restored in the new folder, the first validation there counted as a new best
    # whatever its value and went to best-v1.ckpt, leaving best.ckpt stale beside it.
    assert main(["--output", str(moved), "--resume", "last", "--max-steps", "8", "--eval-every", "2"]) == 0
    names = sorted(path.name for path in (moved / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt"], names
    last = torch.load(moved / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = [value for key, value in last["callbacks"].items() if key.startswith("BestCheckpoint")]
    assert state["best_model_path"] == str(moved / "checkpoints" / "best.ckpt")
    validations = [float(row["val/loss"]) for row in read_metrics(moved) if row.get("val/loss")]
    assert len(validations) == 4
    assert float(state["best_model_score"]) == pytest.approx(min(validations))
    best = torch.load(moved / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] == 2 * (validations.index(min(validations)) + 1)
    selected = json.loads((moved / "summary.json").read_text())["selected_checkpoint"]
    assert selected["path"] == str(moved / "checkpoints" / "best.ckpt")


def test_a_resumed_runs_best_ckpt_that_records_nothing_is_replaced_not_kept_beside_a_new_one(
    tmp_path, capsys
):
    first, moved = tmp_path / "first", tmp_path / "moved"
    assert (
        main(["--model", "ae", *TINY, "--max-steps", "3", "--eval-every", "3", "--output", str(first)]) == 0
    )
    shutil.copytree(first, moved)
    (moved / "checkpoints" / "best.ckpt").write_bytes(b"damaged")
    assert main(["--output", str(moved), "--resume", "last", "--max-steps", "6", "--eval-every", "3"]) == 0
    assert "best.ckpt could not be read" in capsys.readouterr().err
    assert sorted(path.name for path in (moved / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    best = torch.load(moved / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] in (3, 6)


def _resumed_best_checkpoint(folder: Path, stale_record: dict) -> BestCheckpoint:
    callback = BestCheckpoint(folder, "val/loss")
    callback.load_state_dict(stale_record)
    trainer = SimpleNamespace(
        ckpt_path="last.ckpt", is_global_zero=True, strategy=SimpleNamespace(broadcast=lambda o: o)
    )
    callback.on_fit_start(trainer, None)
    return callback


def _best_ckpt(folder: Path, monitor: str = "val/loss", name: str = "best.ckpt", score: float = 0.25) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"monitor": monitor, "best_model_score": torch.tensor(score), "best_model_path": f"/old/{name}"}
    torch.save({"callbacks": {"BestCheckpoint{}": state}}, folder / "best.ckpt")


def test_a_resumed_best_checkpoint_takes_the_value_best_ckpt_was_saved_for(tmp_path):
    # The resumed checkpoint's record may be a validation behind best.ckpt (last.ckpt is saved first) or
    # name another folder; the file's own record is the one that matches its weights.
    _best_ckpt(tmp_path, score=0.25)
    stale = {
        "monitor": "val/loss",
        "best_model_score": torch.tensor(0.9),
        "best_model_path": "/old/best.ckpt",
    }
    callback = _resumed_best_checkpoint(tmp_path, stale)
    assert callback.best_model_path == str(tmp_path / "best.ckpt")
    assert float(callback.best_model_score) == 0.25
    assert callback.best_k_models == {str(tmp_path / "best.ckpt"): callback.best_model_score}


@pytest.mark.parametrize("case", ["absent", "other monitor", "names another file", "corrupt"])
def test_a_resumed_best_checkpoint_restores_nothing_best_ckpt_does_not_record(case, tmp_path, capsys):
    stale = {
        "monitor": "val/loss",
        "best_model_score": torch.tensor(0.9),
        "best_model_path": "/old/best.ckpt",
    }
    if case == "other monitor":
        _best_ckpt(tmp_path, monitor="val/fd")
    elif case == "names another file":
        _best_ckpt(tmp_path, name="best-v1.ckpt")
    elif case == "corrupt":
        (tmp_path / "best.ckpt").write_bytes(b"not a checkpoint")
    callback = _resumed_best_checkpoint(tmp_path, stale)
    assert callback.best_model_path == "" and callback.best_model_score is None and not callback.best_k_models
    if case == "corrupt":
        assert "best.ckpt could not be read" in capsys.readouterr().err


@pytest.mark.slow
def test_config_yaml_reruns_the_same_experiment(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["--model", "vae", *TINY, "--max-steps", "4", "--beta", "0.5", "--output", str(first)]) == 0
    assert main(["--config", str(first / "config.yaml"), "--output", str(second)]) == 0
    assert yaml.safe_load((first / "config.yaml").read_text()) == yaml.safe_load(
        (second / "config.yaml").read_text()
    )
    metrics_first = read_summary(first)["final_metrics"]
    metrics_second = read_summary(second)["final_metrics"]
    assert metrics_first["test/loss"] == pytest.approx(metrics_second["test/loss"], rel=1e-5)


def test_the_commands_a_run_prints_name_the_installed_command_it_was_run_as(tmp_path, monkeypatch):
    """Run as `genae` (pip's console script), the lines to type again say genae: an installed user has no
    run.py. Run as run.py, they say python run.py."""
    from lightning_genae.experiment.program import command_prefix, resume_command

    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "genae")])
    assert command_prefix() == "genae"
    assert main(["--model", "ae", *TINY, "--max-steps", "2", "--output", str(run_dir)]) == 0
    header = (run_dir / "config.yaml").read_text().splitlines()[0]
    assert header.endswith(f"re-run with: genae --config {run_dir.absolute() / 'config.yaml'}")
    assert resume_command(run_dir).startswith("genae --output ")
    monkeypatch.setattr(sys, "argv", ["run.py"])
    assert resume_command(run_dir).startswith("python run.py --output ")
    monkeypatch.setattr(sys, "argv", [str(REPO / "lightning_genae" / "__main__.py")])
    assert command_prefix() == "python -m lightning_genae"


def test_python_dash_m_lightning_genae_is_the_command_line(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "lightning_genae", "--help"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: python -m lightning_genae ")
    assert "example: python -m lightning_genae --model gan" in shown.stdout


@pytest.mark.quick
def test_print_config_prints_what_config_yaml_records(tmp_path, capsys):
    """It printed --output and --overwrite as given: a template saved from it sent every job to one folder,
    replacing each run with the next."""
    run = ["--model", "vae", *TINY, "--max-steps", "4", "--beta", "0.5"]
    assert main([*run, "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main([*run, "--output", str(tmp_path / "other"), "--overwrite", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert printed["output"] is None and printed["overwrite"] is False


def test_config_yaml_records_absolute_paths_and_reruns_from_another_folder(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    write_folder(project / "images")
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    args = ["--model", "ae", "--data", "folder", "--data-dir", "images", "--image-size", "16"]
    args += ["--channels", "1", "--width", "8", "--latent-dim", "8", "--batch-size", "16", "--max-steps", "2"]
    args += ["--backbone", "none"]
    assert main([*args, "--output", "runs/first"]) == 0
    config_file = project / "runs" / "first" / "config.yaml"
    header = config_file.read_text().splitlines()[0]
    assert header.endswith(f"python run.py --config {config_file}")
    assert yaml.safe_load(config_file.read_text())["data_dir"] == str(project / "images")
    checkpoint = project / "runs" / "first" / "checkpoints" / "last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["genae_config"]
    assert stored["data_dir"] == str(project / "images")
    resumed = [
        "--config",
        str(config_file),
        "--resume",
        "runs/first/checkpoints/last.ckpt",
        "--max-steps",
        "3",
    ]
    assert main([*resumed, "--output", "runs/first"]) == 0
    monkeypatch.chdir(elsewhere)
    # From another folder: the checkpoint and config.yaml name the same absolute folder.
    resumed = ["--config", str(config_file), "--resume", str(checkpoint), "--max-steps", "4"]
    assert main([*resumed, "--output", str(project / "runs" / "first")]) == 0
    assert main(["--config", str(config_file), "--output", "second"]) == 0
    assert read_summary(elsewhere / "second")["data_summary"].startswith("folder: train ")


def test_a_home_relative_path_is_recorded_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    write_folder(home / "images")
    monkeypatch.setenv("HOME", str(home))
    args = ["--model", "ae", "--data", "folder", "--data-dir", "~/images", "--image-size", "16"]
    args += ["--channels", "1", "--width", "8", "--latent-dim", "8", "--batch-size", "16", "--max-steps", "1"]
    assert main([*args, "--backbone", "none", "--output", str(tmp_path / "run")]) == 0
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["data_dir"] == str(home / "images")


def test_command_line_wins_over_config_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: vae\nmax-steps: 3\nbeta: 2.0\n")
    assert main(["--config", str(config), "--max-steps", "5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"] == "vae" and printed["max_steps"] == 5 and printed["beta"] == 2.0
    assert printed["recon_loss"] == "bce", "the family default is resolved into the printed config"


def test_a_stray_comma_in_augment_leaves_its_one_arm_as_in_train_size(tmp_path, capsys):
    for value in ("ae,", ",ae", " ae "):
        assert main(["--model", "gan", "--augment", value, "--train-size", "100,", "--print-config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["augment"] == "ae" and printed["train_size"] == 100
    config = tmp_path / "c.yaml"
    config.write_text("model: gan\naugment: 'diffaug,'\n")
    assert main(["--config", str(config), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["augment"] == "diffaug"


@pytest.mark.quick
def test_help_lists_every_choice_with_a_description(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name, spec in MODELS.items():
        assert f"{name}  " in text and spec.description in text
    for needle in ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "folder", "none", "wandb"):
        assert needle in text


@pytest.fixture()
def offline(monkeypatch):
    """Downloads fail at once, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


BAD_INPUTS = {
    "unknown model": (["--model", "nope"], "--model"),
    "unknown data": (["--data", "nope"], "--data"),
    "unknown augment": (["--augment", "nope"], "--augment"),
    "zero steps": (["--max-steps", "0"], "--max-steps"),
    "negative batch": (["--batch-size", "-4"], "--batch-size"),
    "zero lr": (["--lr", "0"], "--lr"),
    "non-numeric steps": (["--max-steps", "many"], "--max-steps"),
    "train size too large": (["--train-size", "100000"], "--train-size"),
    "option of another model": (["--model", "gan", "--denoise", "0.1"], "--denoise"),
    "unknown logger": (["--logger", "csv,nope"], "--logger"),
    "resume missing file": (["--resume", "nowhere/last.ckpt"], "--resume"),
    "resume last without output": (["--resume", "last"], "--output"),
    "missing config file": (["--config", "nowhere.yaml"], "nowhere.yaml"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(name, tmp_path, monkeypatch, capsys, offline):
    monkeypatch.chdir(tmp_path)
    args, expected = BAD_INPUTS[name]
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main([*args, "--max-steps", "2"] if "--max-steps" not in args else args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "bad input must not leave a run folder behind"


def test_missing_dataset_offline_exits_2_with_one_line(tmp_path, capsys, offline):
    code = main(
        [
            "--data",
            "mnist",
            "--data-dir",
            str(tmp_path / "empty"),
            "--max-steps",
            "2",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MNIST" in err
    assert not (tmp_path / "run").exists()


def test_config_with_unknown_key_exits_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: gan\nlearning_rate: 0.1\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "learning_rate" in err


def test_corrupt_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--resume", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", "gan", "--max-steps", "-3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


@pytest.mark.quick
def test_fast_dev_run_checks_the_setup_without_writing_checkpoints(tmp_path):
    run_dir = tmp_path / "fdr"
    assert main(["--model", "vae", *TINY, "--fast-dev-run", "--output", str(run_dir)]) == 0
    assert read_summary(run_dir)["global_step"] == 1
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


@pytest.mark.slow
def test_max_epochs_alone_bounds_the_run(tmp_path):
    run_dir = tmp_path / "epochs"
    assert main(["--model", "ae", *TINY, "--max-epochs", "1", "--output", str(run_dir)]) == 0
    # digits: 1258 training images in full batches of 32 -> 39 iterations per epoch.
    assert read_summary(run_dir)["global_step"] == 1258 // 32


@pytest.mark.slow
def test_genae_console_command_is_installed():
    genae = Path(sys.executable).parent / "genae"
    result = subprocess.run([str(genae), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--model" in result.stdout


def test_backbone_none_trains_without_the_image_metrics(tmp_path, monkeypatch):
    from lightning_genae.metrics import backbones

    def refuse(*args, **kwargs):
        raise AssertionError("--backbone none must not load or train a feature backbone")

    monkeypatch.setattr(backbones, "load_backbone", refuse)
    monkeypatch.setattr("lightning_genae.api.load_backbone", refuse)
    run_dir = tmp_path / "run"
    args = ["--model", "gan", *TINY_RUN, "--max-steps", "2", "--backbone", "none", "--output", str(run_dir)]
    assert main(args) == 0
    final = json.loads((run_dir / "summary.json").read_text())["final_metrics"]
    assert not any("fd_" in name or "kid_" in name for name in final), final
    assert "train/loss_d" in final


def test_backbone_none_in_a_grid_exits_2_with_one_line(tmp_path, capsys):
    root = tmp_path / "grid"
    grid = ["--augment", "none,diffaug", "--backbone", "none"]
    args = ["--model", "gan", *TINY_RUN, *grid, "--output", str(root)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --backbone none skips the image metrics, and a grid compares its arms on the image metrics; "
        "drop --backbone none"
    )
    assert not root.exists()


@pytest.mark.parametrize(
    ("family", "headline", "column"), [("ae", "test/loss", "loss"), ("aae", "none", "mse")]
)
def test_a_grid_of_a_family_that_reconstructs_runs_with_backbone_none(tmp_path, family, headline, column):
    # The AE's headline is its validation loss; the AAE has none without the image metrics, and its arms
    # compare on the reconstruction error.
    root = tmp_path / "grid"
    args = ["--model", family, *TINY_RUN, "--max-steps", "3", "--seeds", "0,1", "--backbone", "none"]
    assert main([*args, "--output", str(root)]) == 0
    summary = (root / "ablation.md").read_text()
    assert f"Headline metric: `{headline}`" in summary, summary
    header = next(line for line in summary.splitlines() if line.startswith("| augment |"))
    assert header == f"| augment | train size | n | failed | {column} | notes |"


def test_a_grid_of_series_reports_the_loss_and_the_scores_of_the_generated_series(tmp_path):
    root = tmp_path / "grid"
    args = ["--model", "rae", "--data", "sines", "--max-steps", "3", "--seeds", "0,1", "--output", str(root)]
    assert main(args) == 0
    lines = (root / "ablation.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| augment"))
    assert header == (
        "| augment | train size | n | failed | loss | discriminative_quick | predictive_quick | "
        "out_of_range | out_of_range_real | discriminative_wide | discriminative_wide_real | notes |"
    )


def test_a_config_files_augment_list_is_a_grid_as_the_flags_list_is(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("model: gan\naugment: [none, diffaug]\n")
    assert (
        main(["--config", str(config), "--seeds", "0", "--output", str(tmp_path / "g"), "--print-config"])
        == 0
    )
    out = capsys.readouterr().out
    assert "# cell 0: none-tsfull-seed0" in out and "# cell 1: diffaug-tsfull-seed0" in out


def test_a_config_files_train_size_list_is_a_grid_as_the_flags_list_is(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    grid = ["--config", str(config), "--seeds", "0", "--output", str(tmp_path / "g"), "--print-config"]
    for written in ("[500, full]", "500,full"):
        config.write_text(f"model: ae\ndata: digits\ntrain_size: {written}\n")
        assert main(grid) == 0
        out = capsys.readouterr().out
        assert "# cell 0: none-ts500-seed0" in out and "# cell 1: none-tsfull-seed0" in out
    # The command line's --train-size replaces the file's list.
    assert main([*grid, "--train-size", "300"]) == 0
    out = capsys.readouterr().out
    assert "# cell 0: none-ts300-seed0" in out and "# cell 1" not in out
    for not_sizes in ("[500, [1]]", "[true]", "[]", "[500, all]"):
        config.write_text(f"model: ae\ndata: digits\ntrain_size: {not_sizes}\n")
        assert main(grid) == 2
        error = capsys.readouterr().err
        assert f"--config {config}: --train-size" in error and error.count("\n") == 1


def test_a_train_size_list_takes_the_full_split_as_full(tmp_path, capsys):
    grid = ["--model", "ae", "--data", "digits", "--seeds", "0", "--output", str(tmp_path / "g")]
    assert main([*grid, "--train-size", "500,full", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "# cell 0: none-ts500-seed0" in out and "# cell 1: none-tsfull-seed0" in out
    assert main([*grid, "--train-size", "500,all"]) == 2
    error = capsys.readouterr().err
    assert "'500,all' is not a count, `full` or a comma list of them (e.g. 1000,full)" in error
    assert main([*grid, "--train-size", "full,full", "--print-config"]) == 2
    assert "--train-size list lists full more than once" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("train_size: full\n")
    assert main(["--config", str(config), "--print-config"]) == 0
    assert "train_size: null" in capsys.readouterr().out


def test_a_relative_augment_ckpt_is_recorded_absolute_and_the_run_resumes_from_another_folder(
    tmp_path, monkeypatch
):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    small = "--data digits --width 8 --latent-dim 8 --batch-size 32 --eval-every 2 --backbone none".split()
    assert main(["--model", "ae", *small, "--max-steps", "2", "--output", "augmenter"]) == 0
    augment = ["--augment", "ae", "--augment-ckpt", "augmenter/checkpoints/last.ckpt"]
    assert main(["--model", "gan", *small, *augment, "--max-steps", "2", "--output", "run"]) == 0
    written = yaml.safe_load((project / "run" / "config.yaml").read_text())
    assert written["augment_ckpt"] == str(project / "augmenter" / "checkpoints" / "last.ckpt")
    monkeypatch.chdir(elsewhere)
    assert main(["--resume", "last", "--output", str(project / "run"), "--max-steps", "3"]) == 0
    assert read_summary(project / "run")["global_step"] == 3


@pytest.mark.parametrize("grid_index", [None, "1"])
def test_a_grid_re_run_with_other_options_is_refused_before_anything_is_written(grid_index, tmp_path, capsys):
    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY, "--seeds", "0,1", "--max-steps", "2", "--output", str(root)]
    assert main(grid) == 0
    written = {path: path.read_bytes() for path in root.iterdir() if path.is_file()}
    capsys.readouterr()
    # Another batch size for every cell; an array task (--grid-index) checks all cells too, so it cannot
    # train its own cell among the other grid's.
    again = [arg if arg != "32" else "16" for arg in grid] + (
        [] if grid_index is None else ["--grid-index", grid_index]
    )
    assert main(again) == 2
    err = capsys.readouterr().err
    assert "2 of the 2 cells" in err and "--batch-size 16" in err and err.count("\n") == 1
    assert {path: path.read_bytes() for path in root.iterdir() if path.is_file()} == written


def test_a_grids_print_config_shows_the_cell_of_its_grid_index_and_stops_quietly_when_piped(tmp_path):
    grid = ["--model", "gan", "--seeds", "0,1,2", "--augment", "none,ae", "--output", str(tmp_path / "g")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    printed = subprocess.run(
        [sys.executable, "run.py", *grid, "--grid-index", "3", "--print-config"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert [line for line in printed.splitlines() if line.startswith("# cell")] == [
        "# cell 3: ae-tsfull-seed0"
    ]
    # `| head -1`: the reader stops after one line; that is no error and no traceback.
    piped = subprocess.run(
        f"{shlex.quote(sys.executable)} run.py {shlex.join(grid)} --print-config | head -1",
        shell=True, cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert piped.stdout == "# cell 0: none-tsfull-seed0\n" and "Traceback" not in piped.stderr, piped.stderr


@pytest.mark.parametrize("both_streams", [False, True], ids=["stdout piped", "stdout and stderr piped"])
def test_a_run_whose_output_reader_stops_finishes_its_run(tmp_path, both_streams):
    """`python run.py ... | head -1`: the reader leaves after the first line; the run's later writes to the
    closed pipe are dropped (no BrokenPipeError mid-run) and the run finishes its folder."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "run.py",
        "--model",
        "ae",
        *TINY_RUN,
        "--max-steps",
        "6",
        "--output",
        str(run_dir),
    ]
    stderr = subprocess.STDOUT if both_streams else subprocess.PIPE
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout.readline()  # the first line, then the reader is gone
    process.stdout.close()
    errors = process.stderr.read() if process.stderr else ""
    assert process.wait(timeout=300) == 0, errors
    assert "Traceback" not in errors and (run_dir / "summary.json").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 6
    if not both_streams:
        assert "note: nothing reads this command's stdout any more" in errors, errors


def test_a_config_file_may_list_devices_and_a_logger_named_twice_is_kept_once(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    # Device indices are a GPU run's (the CPU takes a count).
    config.write_text("devices: [0, 1]\naccelerator: gpu\nlogger: [csv, tensorboard]\n")
    assert main(["--config", str(config), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["devices"] == "0,1" and printed["logger"] == ["csv", "tensorboard"]
    assert main(["--logger", "wandb,tensorboard", "--logger", "wandb", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["logger"] == ["wandb", "tensorboard"]
    # A list where no comma list is read stays refused.
    config.write_text("output: [runs/a, runs/b]\n")
    assert main(["--config", str(config), "--print-config"]) == 2


@pytest.mark.parametrize("key", ["lr", "model", "logger", "output", "augment"])
def test_a_config_files_aliases_nested_in_themselves_are_refused_in_a_short_line(key, tmp_path, capsys):
    # Nine levels of nine aliases each: a few hundred bytes whose full repr would take gigabytes.
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    config = tmp_path / "c.yaml"
    config.write_text(f"{key}:\n" + "".join(f"  - {level}\n" for level in levels))
    assert main(["--config", str(config), "--print-config"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --config {config}: --{key}: [") and "nests lists" in error
    assert len(error) < 400 and "\n" not in error.strip()


def test_a_config_files_misspelt_option_is_told_the_one_it_resembles(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("modle: gan\n")
    assert main(["--config", str(config), "--print-config"]) == 2
    assert "unknown option modle (did you mean 'model'?); valid options are listed by --help" in (
        capsys.readouterr().err
    )


def test_a_config_files_merge_key_merges_and_its_own_keys_win(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("max_steps: 2\n<<: {width: 8, max_steps: 9}\n")
    assert main(["--config", str(config), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["width"] == 8 and printed["max_steps"] == 2


def test_a_config_files_dotted_key_holds_an_anchor_for_a_merge_and_is_no_option(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(".small: &small\n  width: 8\n  max_steps: 3\n<<: *small\nmodel: ae\nmax_steps: 5\n")
    assert main(["--config", str(config), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["width"] == 8 and printed["max_steps"] == 5 and ".small" not in printed
    # Without the dot the key is an option's name, and no option has that name.
    config.write_text("small: &small\n  width: 8\n<<: *small\n")
    assert main(["--config", str(config), "--print-config"]) == 2
    assert "unknown option small" in capsys.readouterr().err


def test_ctrl_c_while_the_libraries_load_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    # Before the run's own handlers listen, Python would print a traceback of whatever is importing.
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_quiet_lightning", interrupted)
    assert main(["--model", "ae", *TINY, "--max-steps", "2", "--output", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "stopped by Ctrl-C\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["last", "run/checkpoints/last.ckpt"])
def test_resume_in_a_config_file_is_refused_not_left_out(value, tmp_path, capsys, monkeypatch):
    # Left out, a fresh run of the default model would train where a continued one is asked for.
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"resume: {value}\noutput: {tmp_path / 'out'}\nmax_steps: 3\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --config {config}: resume: {value} continues a run, which only the")
    assert len(err.splitlines()) == 1 and f"type --resume {value}" in err
    assert not (tmp_path / "out").exists()
    # A run's config.yaml records `resume: null`, which is no request.
    config.write_text("resume: null\nmodel: ae\n")
    assert main(["--config", str(config), "--print-config"]) == 0


def test_a_runs_config_yaml_with_another_model_or_augmentation_leaves_the_files_other_options_out(
    tmp_path, capsys
):
    """config.yaml records every option of its family and augmentations; a new run from it with another
    --model was refused for options the user never typed."""
    run = tmp_path / "gan"
    assert (
        main(["--model", "gan", *TINY, "--max-steps", "2", "--augment", "diffaug", "--output", str(run)]) == 0
    )
    capsys.readouterr()
    config = str(run / "config.yaml")
    assert main(["--config", config, "--model", "ae", "--augment", "none", "--print-config"]) == 0
    captured = capsys.readouterr()
    printed = yaml.safe_load(captured.out)
    assert printed["model"] == "ae" and printed["augment"] == "none" and "gan_loss" not in printed
    assert (
        "--config: left out --diffaug-cutout, --diffaug-policy" in captured.err
        and "--gan-loss" in captured.err
    )
    # The gan's default learning rate, read by both, is no choice for the ae: it takes its own.
    assert printed["lr"] == 1e-3 and "--lr" in captured.err
    # An option typed on the command line is the user's: refused where the run does not read it.
    assert main(["--config", config, "--model", "ae", "--gan-loss", "hinge", "--print-config"]) == 2
    # A grid from the file alike.
    grid = ["--config", config, "--model", "ae", "--augment", "none", "--seeds", "0,1"]
    assert main([*grid, "--output", str(tmp_path / "grid"), "--print-config"]) == 0


def test_the_source_commit_is_recorded_where_the_code_is_a_clone(tmp_path):
    # The package's version stays the same from commit to commit; the commit names the scoring code.
    import subprocess

    from lightning_genae.source import source_revision

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert source_revision(tmp_path) is None, "not a clone: no commit"
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert source_revision(tmp_path) == {"commit": head, "modified": False}
    (tmp_path / "untracked.txt").write_text("not the code")
    assert source_revision(tmp_path) == {"commit": head, "modified": False}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert source_revision(tmp_path) == {"commit": head, "modified": True}


def test_a_checkpoint_written_by_other_code_says_so_when_evaluated_or_resumed(tmp_path, monkeypatch, capsys):
    # The commit is what names the code: the same checkpoint scored by another commit's metrics may give
    # other numbers than its run's, and a resume trains part under each.
    here = {"commit": "a" * 40, "modified": False}
    monkeypatch.setattr("lightning_genae.source.current_source", lambda: here)
    monkeypatch.setattr("lightning_genae.models.base.current_source", lambda: here)
    run_dir = tmp_path / "run"
    assert main(["--model", "gan", *TINY, "--max-steps", "2", "--output", str(run_dir)]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["genae_source"] == here
    capsys.readouterr()
    assert main(["--evaluate", str(last), "--output", str(tmp_path / "same")]) == 0
    assert "written by the code of commit" not in capsys.readouterr().out
    checkpoint["genae_source"] = {"commit": "b" * 40, "modified": False}
    torch.save(checkpoint, last)
    assert main(["--evaluate", str(last), "--output", str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert f"written by the code of commit {'b' * 12}, and this is {'a' * 12}" in out
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "3"]) == 0
    assert "the run goes on under this code" in capsys.readouterr().out
