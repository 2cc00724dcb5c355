"""A start that is refused (exit 2) leaves nothing behind and names the fix in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from refusals import one_line
from tiny import TINY_RUN

from lightning_genae.experiment.cli import main

TOO_LONG = "x" * 300


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--config", f"{TOO_LONG}.yaml", "--print-config"], "OSError: [Errno 36] File name too long"),
        (["--model", "ae", *TINY_RUN, "--output", f"{{tmp}}/{TOO_LONG}"], "File name too long"),
        (["--evaluate", f"{{tmp}}/{TOO_LONG}.ckpt"], "File name too long"),
        (["--model", "ae", "--print-config", "--config", "{denied}"], "PermissionError: [Errno 13]"),
    ],
    ids=["config", "output", "evaluate", "permission"],
)
def test_an_os_error_anywhere_in_the_command_is_one_line_and_exit_2(
    arguments, says, tmp_path, monkeypatch, capsys
):
    import errno

    from lightning_genae.experiment import arguments as parsing

    denied = tmp_path / "denied.yaml"
    denied.write_text("model: ae\n")
    read = Path.read_bytes

    def refused(path: Path) -> bytes:
        if path == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return read(path)

    monkeypatch.setattr(parsing.Path, "read_bytes", refused)
    assert main([argument.format(tmp=tmp_path, denied=denied) for argument in arguments]) == 2
    one_line(capsys, "error: ", says)
    assert sorted(tmp_path.iterdir()) == [denied]


@pytest.mark.parametrize("index", ["99", "-1"])
def test_a_grid_index_out_of_range_leaves_no_grid_root(index, tmp_path, capsys):
    root = tmp_path / "grid"
    args = ["--model", "ae", *TINY_RUN, "--seeds", "0,1", "--max-steps", "2", "--output", str(root)]
    assert main([*args, "--grid-index", index]) == 2
    one_line(capsys, f"--grid-index {index} is out of range", "2 cells", "0..1")
    assert not root.exists(), "no grid.json, no root folder"


@pytest.fixture()
def finished_run(tiny_ae_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's finished 3-iteration ae run."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("max_steps", [["--max-steps", "2"], ["--max-steps", "3"], []])
def test_a_resume_with_nothing_left_to_train_is_refused_and_touches_nothing(max_steps, finished_run, capsys):
    before = snapshot(finished_run)
    assert main(["--resume", "last", "--output", str(finished_run), *max_steps]) == 2
    limit = max_steps[1] if max_steps else "3"
    one_line(capsys, "the run is at iteration 3", f"--max-steps {limit} leaves nothing to train")
    assert snapshot(finished_run) == before, "no checkpoint, summary or metrics row rewritten"


def test_a_resume_whose_other_budget_is_spent_is_refused_naming_it(tmp_path, capsys):
    """Lightning stops at the first budget reached: a run finished by --max-epochs, resumed with --max-steps
    alone, keeps its --max-epochs and would train nothing; a run finished by --max-steps, resumed with a
    --max-epochs it has passed, has both spent."""
    by_epochs = tmp_path / "by-epochs"
    common = ["--model", "ae", *TINY_RUN, "--train-size", "64", "--eval-every", "100"]
    assert main([*common, "--max-epochs", "2", "--output", str(by_epochs)]) == 0
    capsys.readouterr()
    before = snapshot(by_epochs)
    resumed = tmp_path / "resumed"
    assert (
        main(
            [
                "--resume",
                str(by_epochs / "checkpoints" / "last.ckpt"),
                "--max-steps",
                "6",
                "--output",
                str(resumed),
            ]
        )
        == 2
    )
    one_line(capsys, "--max-epochs 2 leaves nothing to train")
    assert not resumed.exists() and snapshot(by_epochs) == before
    by_steps = tmp_path / "by-steps"
    assert main([*common, "--max-steps", "3", "--output", str(by_steps)]) == 0
    capsys.readouterr()
    assert main(["--resume", "last", "--output", str(by_steps), "--max-epochs", "1"]) == 2
    # Two iterations an epoch: the third is part-way through the second epoch, which is not counted.
    one_line(capsys, "at iteration 3 (epoch 1)", "--max-steps 3 and --max-epochs 1 leaves nothing to train")


def test_an_extended_run_stopped_in_its_final_evaluation_finishes_with_resume_last(finished_run, capsys):
    """A run extended from 3 to 5 iterations keeps its 3-iteration summary.json until its final evaluation
    writes the new one: stopped there (last.ckpt at 5), `--resume last` runs that evaluation, the stale
    summary not being the run's."""
    import json

    stale = (finished_run / "summary.json").read_bytes()
    assert main(["--resume", "last", "--output", str(finished_run), "--max-steps", "5"]) == 0
    (finished_run / "summary.json").write_bytes(stale)  # as if stopped before the new one was written
    capsys.readouterr()
    assert main(["--resume", "last", "--output", str(finished_run), "--max-steps", "5"]) == 0
    assert "training is complete at iteration 5; running the final evaluation" in capsys.readouterr().out
    assert json.loads((finished_run / "summary.json").read_text())["global_step"] == 5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-steps", str(10**23)], "--max-steps must lie in [1, 1000000000]"),
        (["--max-epochs", str(10**7)], "--max-epochs must lie in [1, 1000000]"),
        (["--eval-samples", str(10**14)], "--eval-samples must lie in [6, 10000000]"),
        (["--batch-size", str(10**10)], "--batch-size must be at most 2,147,483,647"),
    ],
)
@pytest.mark.parametrize("mode", ["run", "print-config"])
def test_integers_beyond_any_run_are_refused(flags, message, mode, tmp_path, capsys):
    out = tmp_path / "run"
    extra = ["--print-config"] if mode == "print-config" else ["--output", str(out)]
    assert main(["--model", "ae", *TINY_RUN, *flags, *extra]) == 2
    one_line(capsys, message)
    assert not out.exists()


@pytest.mark.parametrize(
    "option", ["--output", "--data-dir", "--resume", "--augment-ckpt", "--inception-weights"]
)
def test_an_empty_path_is_refused_not_read_as_the_default(option, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "1", option, ""]) == 2
    one_line(capsys, f"{option}: is empty")
    assert list(tmp_path.iterdir()) == [], "no runs/ folder made"


def test_an_empty_output_in_a_config_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text('output: ""\n')
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "1", "--config", "c.yaml"]) == 2
    one_line(capsys, "--output: is empty")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.yaml"]


def test_a_file_given_as_an_image_folder_says_what_it_is(tmp_path, capsys):
    image = tmp_path / "picture.png"
    image.write_bytes(b"not really")
    out = tmp_path / "run"
    assert main(["--model", "ae", "--data", "folder", "--data-dir", str(image), "--output", str(out)]) == 2
    one_line(capsys, f"{image} is a file", "give a folder of images")
    assert not out.exists()


def test_a_folder_given_as_a_csv_file_is_refused_naming_it(tmp_path, capsys):
    folder = tmp_path / "series"
    folder.mkdir()
    out = tmp_path / "run"
    assert main(["--model", "rae", "--data", "csv", "--data-dir", str(folder), "--output", str(out)]) == 2
    one_line(capsys, f"{folder}: not read as CSV")
    assert not out.exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "ae", "--data", "digits", "--channels", "2"],
        ["--model", "ae", "--data", "folder", "--channels", "2"],
        ["--model", "rae", "--data", "smnist", "--channels", "2"],
        ["--model", "ae", "--data", "digits", "--seeds", "0,1", "--image-size", "32"],
    ],
    ids=["fixed channels", "folder channels", "series without channels", "grid"],
)
def test_print_config_refuses_the_shape_options_the_run_refuses(flags, tmp_path, capsys):
    assert main([*flags, "--print-config"]) == 2
    printed = one_line(capsys)
    out = tmp_path / "run"
    assert main([*flags, "--max-steps", "1", "--output", str(out)]) == 2
    assert one_line(capsys) == printed
    assert not out.exists()


def test_a_folder_too_small_for_the_image_metrics_is_refused_before_training(tmp_path, capsys):
    from PIL import Image

    for index in range(40):
        folder = tmp_path / "images" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=index * 6).save(folder / f"{index}.png")
    out = tmp_path / "run"
    data = ["--data", "folder", "--data-dir", str(tmp_path / "images"), "--image-size", "16"]
    shape = ["--channels", "1"]
    budget = ["--batch-size", "16", "--max-steps", "2"]
    assert main(["--model", "gan", *data, *shape, *budget, "--output", str(out)]) == 2
    # The folder is labelled, but its feature classifier is not trained for a run refused for its splits.
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "classifier" not in captured.out, captured
    for text in ("the val split of folder, which holds 2 images", "at least 6", "backbone none"):
        assert text in err, err
    assert not out.exists()


@pytest.mark.parametrize("inside", ["run", "."], ids=["a subfolder", "the image folder itself"])
def test_a_run_folder_among_the_images_of_data_folder_is_refused(inside, tmp_path, capsys):
    # The run's sample grids would be the next run's training images (a subfolder: a class of its own).
    from PIL import Image

    images = tmp_path / "images"
    for index in range(4):
        (images / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=index * 60).save(images / f"class{index % 2}" / f"{index}.png")
    out = images / inside
    data = ["--data", "folder", "--data-dir", str(images), "--image-size", "16", "--channels", "1"]
    assert main(["--model", "gan", *data, "--max-steps", "2", "--output", str(out)]) == 2
    one_line(capsys, f"the run folder {out} and --data-dir {images} overlap", "pick an --output apart")
    grid = ["--model", "gan", *data, "--seeds", "0,1", "--output", str(out)]
    assert main(grid) == 2
    one_line(capsys, f"the run folder {out} and --data-dir {images} overlap")
    assert sorted(path.name for path in images.iterdir()) == ["class0", "class1"]


@pytest.mark.parametrize("data_name", ["images", "mine"], ids=["the run's images folder", "another"])
def test_an_image_folder_inside_the_run_folder_is_refused(data_name, tmp_path, capsys):
    # The run would write its pictures into it (images/), or among the folders the reader walks.
    from PIL import Image

    out = tmp_path / "run"
    images = out / data_name
    for index in range(4):
        (images / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=index * 60).save(images / f"class{index % 2}" / f"{index}.png")
    data = ["--data", "folder", "--data-dir", str(images), "--image-size", "16", "--channels", "1"]
    assert main(["--model", "gan", *data, "--max-steps", "2", "--output", str(out)]) == 2
    one_line(capsys, f"the run folder {out} and --data-dir {images} overlap", "pick an --output apart")
    assert sorted(path.name for path in out.iterdir()) == [data_name]
    assert sorted(path.name for path in images.iterdir()) == ["class0", "class1"]


@pytest.mark.parametrize(
    "scored", ["images", "images/class0", "."], ids=["the data", "inside it", "around it"]
)
def test_evaluate_folder_of_images_shared_with_the_data_is_refused(scored, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    for index in range(40):
        (images / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=index * 6).save(images / f"class{index % 2}" / f"{index}.png")
    data = ["--data", "folder", "--data-dir", str(images), "--image-size", "16", "--channels", "1"]
    folder = tmp_path / scored
    command = ["--evaluate-folder", str(folder), *data, "--output", str(tmp_path / "scores")]
    assert main(command) == 2
    one_line(capsys, f"--evaluate-folder {folder} and --data-dir {images} overlap", "kept apart")
    assert not (tmp_path / "scores").exists()


def test_a_folder_linked_into_the_images_is_judged_as_the_images_are(tmp_path, capsys):
    # A link from the image folder to the run's images/ (or to a folder inside a scored one) is read by
    # the dataset: the run's grids would become training images, the scored images real test images.
    from PIL import Image

    images, out, scored = tmp_path / "images", tmp_path / "out", tmp_path / "scored"
    for index in range(40):
        (images / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=index * 6).save(images / f"class{index % 2}" / f"{index}.png")
    (out / "images").mkdir(parents=True)
    (images / "gen").symlink_to(out / "images", target_is_directory=True)
    data = ["--data", "folder", "--data-dir", str(images), "--image-size", "16", "--channels", "1"]
    assert main(["--model", "gan", *data, "--max-steps", "2", "--output", str(out)]) == 2
    one_line(capsys, f"the run folder {out} and --data-dir {images} (through {out / 'images'}) overlap")
    (images / "gen").unlink()
    (scored / "more").mkdir(parents=True)
    (images / "extra").symlink_to(scored / "more", target_is_directory=True)
    command = ["--evaluate-folder", str(scored), *data, "--output", str(tmp_path / "scores")]
    assert main(command) == 2
    one_line(
        capsys, f"--evaluate-folder {scored} and --data-dir {images} (through {scored / 'more'}) overlap"
    )
    assert not (tmp_path / "scores").exists()


def test_a_run_folder_in_a_folder_linked_into_the_images_is_refused_and_an_evaluation_there_is_not(
    tmp_path, capsys
):
    from PIL import Image

    images, outside = tmp_path / "images", tmp_path / "outside"
    for index in range(40):
        (images / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=index * 6).save(images / f"class{index % 2}" / f"{index}.png")
    outside.mkdir()
    (images / "extra").symlink_to(outside, target_is_directory=True)
    data = ["--data", "folder", "--data-dir", str(images), "--image-size", "16", "--channels", "1"]
    tiny = ["--width", "8", "--latent-dim", "4", "--batch-size", "8", "--backbone", "none"]
    out = outside / "run"
    assert main(["--model", "vae", *data, *tiny, "--max-steps", "2", "--output", str(out)]) == 2
    one_line(capsys, f"the run folder {out} and --data-dir {images} (through {outside}) overlap")
    trained = tmp_path / "run"
    assert main(["--model", "vae", *data, *tiny, "--max-steps", "2", "--output", str(trained)]) == 0
    # An evaluation writes eval.json, no pictures: it may write among the images.
    checkpoint = trained / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(checkpoint), "--output", str(images / "scores")]) == 0


def test_resume_last_with_a_grids_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    root = tmp_path / "grid"
    for cell in ("none-s0", "ae-s0"):
        (root / cell / "checkpoints").mkdir(parents=True)
        (root / cell / "checkpoints" / "last.ckpt").write_bytes(b"not read")
    (root / "grid.json").write_text("{}")
    before = sorted(path.relative_to(root) for path in root.rglob("*"))
    assert main(["--resume", "last", "--output", str(root), "--max-steps", "3"]) == 2
    one_line(capsys, f"--resume: no checkpoint file at {root / 'checkpoints' / 'last.ckpt'}")
    assert sorted(path.relative_to(root) for path in root.rglob("*")) == before


def test_seed_beside_seeds_is_refused_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "grid"
    args = ["--model", "gan", *TINY_RUN, "--seeds", "0,1", "--max-steps", "2", "--output", str(root)]
    assert main([*args, "--seed", "3"]) == 2
    one_line(capsys, "--seed 3 and --seeds 0,1 both give the grid's seeds", "drop --seed")
    assert not root.exists()


def test_a_config_files_seed_gives_way_to_seeds(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("model: gan\nseed: 3\n")
    args = ["--config", str(config), *TINY_RUN, "--seeds", "0,1", "--output", str(tmp_path / "grid")]
    assert main([*args, "--print-config"]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# cell")]
    assert headers == ["# cell 0: none-tsfull-seed0", "# cell 1: none-tsfull-seed1"]


GRID_ROOT_FILES = {
    "foreign grid.json": {"ablation.md": "my notes\n", "ablation.csv": "a,b\n", "grid.json": '{"mine": 1}\n'},
    "summary files without grid.json": {"ablation.md": "my notes\n", "tuning.json": "{}\n"},
}


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("files", GRID_ROOT_FILES.values(), ids=GRID_ROOT_FILES.keys())
def test_a_grid_refuses_a_root_holding_files_no_grid_wrote_and_touches_nothing(
    files, overwrite, tmp_path, capsys
):
    root = tmp_path / "mygrid"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    args = ["--model", "ae", *TINY_RUN, "--seeds", "0,1", "--max-steps", "2", "--output", str(root)]
    assert main([*args, *overwrite]) == 2
    expected = "is not an ablation grid's list of cells" if "grid.json" in files else "but no grid.json"
    one_line(capsys, f"--output {root}", expected, "pick another --output")
    assert snapshot(root) == {name: text.encode() for name, text in files.items()}


def test_summarize_refuses_a_folder_whose_grid_json_no_grid_wrote(tmp_path, capsys):
    files = GRID_ROOT_FILES["foreign grid.json"]
    root = tmp_path / "mygrid"
    (root / "none-tsfull-seed0").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "none-tsfull-seed0" / "failed.json").write_text('{"error": "x"}')
    before = snapshot(root)
    assert main(["--summarize", str(root)]) == 2
    one_line(capsys, f"--summarize {root}: its grid.json is not an ablation grid's list of cells")
    assert snapshot(root) == before


def test_a_grid_into_a_finished_runs_folder_is_refused_and_touches_nothing(finished_run, capsys):
    before = snapshot(finished_run)
    args = ["--model", "ae", *TINY_RUN, "--seeds", "0,1", "--max-steps", "2", "--output", str(finished_run)]
    assert main(args) == 2
    one_line(
        capsys, f"--output {finished_run} already holds a finished run", "pick another --output for the grid"
    )
    assert snapshot(finished_run) == before


def test_a_grid_into_a_single_runs_folder_is_refused_even_with_overwrite(finished_run, capsys):
    before = snapshot(finished_run)
    args = ["--model", "ae", *TINY_RUN, "--seeds", "0,1", "--max-steps", "2", "--output", str(finished_run)]
    assert main([*args, "--overwrite"]) == 2
    one_line(capsys, f"--output {finished_run} already holds a finished run")
    assert snapshot(finished_run) == before


def test_a_single_run_into_a_grids_folder_is_refused_even_with_overwrite(tmp_path, capsys):
    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--seeds", "0", "--output", str(root)]
    assert main(grid) == 0
    before = sorted(path.relative_to(root) for path in root.rglob("*"))
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main(["--model", "ae", *TINY_RUN, "--max-steps", "2", "--output", str(root), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --output {root} is an ablation grid's folder (grid.json)"), err
        assert sorted(path.relative_to(root) for path in root.rglob("*")) == before


def test_a_resume_at_another_eval_samples_is_refused_and_best_ckpt_stays(tmp_path, capsys):
    """FD's bias falls with the sample count, and best.ckpt is chosen among the run's validations: a resume
    that measured them at another count would compare FDs of two protocols."""
    run = tmp_path / "gan"
    args = ["--model", "gan", *TINY_RUN, "--max-steps", "2", "--eval-every", "2", "--eval-samples", "60"]
    assert main([*args, "--output", str(run)]) == 0
    capsys.readouterr()
    before = snapshot(run)
    assert main(["--resume", "last", "--output", str(run), "--max-steps", "4", "--eval-samples", "20"]) == 2
    one_line(capsys, "--eval-samples 20 (checkpoint: 60) would make it another run")
    assert snapshot(run) == before
    # An autoencoder computes no generative metric and chooses best.ckpt on val/loss: it may change.
    ae_run = tmp_path / "ae"
    ae = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--eval-samples", "60", "--output", str(ae_run)]
    assert main(ae) == 0
    assert (
        main(["--resume", "last", "--output", str(ae_run), "--max-steps", "3", "--eval-samples", "20"]) == 0
    )
