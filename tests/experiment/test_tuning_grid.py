"""Tuning grids: candidates chosen per arm on the validation split, then run with the grid's seeds on test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_ablation import write_run
from test_bad_inputs import assert_one_line_error, run_main
from tiny import TINY_RUN

from lightning_genae.datamodules.base import InMemoryDataModule
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation import summarize
from lightning_genae.experiment.ablation import tuning as tuning_module
from lightning_genae.experiment.ablation.cells import plan_grid
from lightning_genae.experiment.ablation.tuning import choose, plan_tuning, split_candidates
from lightning_genae.experiment.arguments import build_parser, command_line_values
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import RunConfig

POLICIES = "color|translation,cutout"
GRID = [
    "--model", "gan", *TINY_RUN, "--max-steps", "2", "--eval-every", "2", "--eval-samples", "50",
    "--augment", "none,diffaug", "--diffaug-policy", POLICIES, "--tune-seeds", "9", "--seeds", "0",
]  # fmt: skip
# A tuning cell's name holds every tunable option its candidate reads (the ratios only with their policy).
TUNING_CELLS = [
    "diffaug-tsfull-seed9__diffaug_policy=color",
    "diffaug-tsfull-seed9__diffaug_policy=translation,cutout__diffaug_translation=0.125__diffaug_cutout=0.5",
]


@pytest.fixture(scope="module")
def tuned_grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tuning grid run through the command line, with every use of a test split's loader recorded
    together with whether the arms' choice had been made yet."""
    root = tmp_path_factory.mktemp("tuned") / "grid"
    chosen = {"done": False}
    test_loads: list[bool] = []
    choose, test_dataloader = tuning_module.choose, InMemoryDataModule.test_dataloader

    def recording_choose(*args: Any, **kwargs: Any) -> Any:
        chosen["done"] = True
        return choose(*args, **kwargs)

    def recording_test_dataloader(self: InMemoryDataModule) -> Any:
        test_loads.append(chosen["done"])
        return test_dataloader(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuning_module, "choose", recording_choose)
        patch.setattr(InMemoryDataModule, "test_dataloader", recording_test_dataloader)
        assert main([*GRID, "--output", str(root)]) == 0
    return {"root": root, "test_loads": test_loads}


def test_each_arm_runs_the_candidate_with_the_best_validation_number(tuned_grid) -> None:
    root = tuned_grid["root"]
    record = json.loads((root / "tuning.json").read_text())
    arms = {arm["augment"]: arm for arm in record["arms"]}
    diffaug = arms["diffaug"]
    assert diffaug["tuned"] == {"diffaug_policy": ["color", "translation,cutout"]}
    assert diffaug["tuning_runs"] == 2 and record["tune_seeds"] == [9] and record["seeds"] == [0]
    # The recorded numbers are the tuning runs' own final validation FD, and the choice is their argmin.
    means = {}
    for candidate in diffaug["candidates"]:
        (run,) = candidate["runs"]
        summary = json.loads((root / "tuning" / run["cell"] / "summary.json").read_text())
        assert run["value"] == summary["final_metrics"]["val/fd_classifier"] == candidate["mean"]
        means[candidate["values"]["diffaug_policy"]] = candidate["mean"]
    assert diffaug["chosen"]["diffaug_policy"] == min(means, key=means.get)
    final = yaml.safe_load((root / "diffaug-tsfull-seed0" / "config.yaml").read_text())
    assert final["diffaug_policy"] == diffaug["chosen"]["diffaug_policy"] and final["seed"] == 0
    # `none` reads no tunable option: one candidate, no tuning run, its final cell as planned.
    assert arms["none"]["tuning_runs"] == 0 and arms["none"]["chosen"] == {}
    assert sorted(path.name for path in (root / "tuning").iterdir() if path.is_dir()) == TUNING_CELLS


def test_the_test_split_is_not_read_before_the_choice(tuned_grid) -> None:
    root = tuned_grid["root"]
    # Both final runs read it, after the choice; no tuning run asked for a test loader.
    assert tuned_grid["test_loads"] and all(tuned_grid["test_loads"])
    for name in TUNING_CELLS:
        summary = json.loads((root / "tuning" / name / "summary.json").read_text())
        assert not [key for key in summary["final_metrics"] if key.startswith("test/")]
        assert set(summary["evaluation"]) == {"val"}
        assert summary["config"]["test_split"] is False
        # The checkpoint chosen on validation is named, and not evaluated on the test split.
        selected = summary["selected_checkpoint"]
        assert selected["path"] and "test_metrics" not in selected and "--no-test-split" in selected["note"]
    final = json.loads((root / "diffaug-tsfull-seed0" / "summary.json").read_text())
    assert "test/fd_classifier" in final["final_metrics"]


def test_evaluating_a_tuning_run_again_stays_off_the_test_split(
    tuned_grid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tuned_grid["root"] / "tuning" / TUNING_CELLS[0] / "checkpoints" / "last.ckpt"
    recorded = json.loads((checkpoint.parents[1] / "summary.json").read_text())["final_metrics"]

    def no_test_loader(self: InMemoryDataModule) -> Any:
        raise AssertionError("the test split's loader was asked for")

    monkeypatch.setattr(InMemoryDataModule, "test_dataloader", no_test_loader)
    assert main(["--evaluate", str(checkpoint), "--output", str(tmp_path / "again")]) == 0
    assert "kept off the test split" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "again" / "eval.json").read_text())["metrics"]
    assert metrics and not [key for key in metrics if key.startswith("test/")]
    assert metrics["val/fd_classifier"] == recorded["val/fd_classifier"]


def test_report_has_a_tuning_section_and_the_chosen_values_in_the_arm_row(tuned_grid) -> None:
    markdown = (tuned_grid["root"] / "ablation.md").read_text()
    section = markdown.split("## Tuning (validation split)", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| diffaug"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:5] == ["diffaug_policy: color / translation,cutout", "2", "2"]
    assert "tune seed(s) 9" in section and "`val/fd_classifier` (lower is better)" in section
    table_row = next(line for line in markdown.splitlines() if line.startswith("| diffaug | full"))
    assert f"chosen on val: diffaug_policy={cells[5].removeprefix('diffaug_policy=')}" in table_row


def test_rerunning_a_tuning_grid_skips_its_finished_tuning_and_final_cells(
    tuned_grid, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "grid"
    shutil.copytree(tuned_grid["root"], root)
    before = {path: path.read_bytes() for path in root.rglob("*.ckpt")}
    assert main([*GRID, "--output", str(root)]) == 0
    out = capsys.readouterr().out
    for index, name in enumerate(TUNING_CELLS, start=1):
        assert f"[{index}/2] {name}: finished (step 2), skipped" in out
    assert "[2/2] diffaug-tsfull-seed0: finished (step 2), skipped" in out
    assert {path: path.read_bytes() for path in root.rglob("*.ckpt")} == before


def test_a_final_cell_holding_a_run_of_another_value_is_refused_and_not_counted_as_this_grids(
    tuned_grid, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tuned arm's final cell whose folder holds a finished run of another value than the choice is
    refused when it comes (its options are known only after tuning); the closing count, which takes its
    folder for finished, says that this command did not run it."""
    root = tmp_path / "grid"
    shutil.copytree(tuned_grid["root"], root)
    summary_path = root / "diffaug-tsfull-seed0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    chosen = summary["config"]["diffaug_policy"]
    summary["config"]["diffaug_policy"] = next(p for p in POLICIES.split("|") if p != chosen)
    summary_path.write_text(json.dumps(summary))
    assert main([*GRID, "--output", str(root)]) == 1
    out = capsys.readouterr().out
    assert (
        "2 of 2 cells finished; refused by this command (see why above), their folders' runs not its own: "
        "diffaug-tsfull-seed0"
    ) in out


def test_grid_indices_name_tuning_cells_first_and_a_final_cell_waits_for_its_tuning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "grid"
    assert main([*GRID, "--output", str(root), "--print-config"]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# cell")]
    assert headers[:2] == [f"# cell {i}: tuning/{name}" for i, name in enumerate(TUNING_CELLS)]
    assert headers[2] == "# cell 2: none-tsfull-seed0"
    assert headers[3].startswith("# cell 3: diffaug-tsfull-seed0 (runs the best of its 2 candidates")
    code, err = run_main([*GRID, "--output", str(root), "--grid-index", "3"], capsys)
    assert_one_line_error(code, err, "--grid-index 3 is the final cell diffaug-tsfull-seed0, whose arm")
    assert "tuning cells 0..1" in err and not root.exists()
    code, err = run_main([*GRID, "--output", str(root), "--grid-index", "4"], capsys)
    assert_one_line_error(code, err, "--grid-index 4 is out of range")
    # A final cell whose arm needs no tuning runs now, and succeeds though diffaug's tuning is still to come.
    assert main([*GRID, "--output", str(root), "--grid-index", "2"]) == 0
    assert (root / "none-tsfull-seed0" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--augment", "none,ae", "--augment-p", "0.1,0.5"], "--augment-p 0.1,0.5 lists candidates to tune"),
        (
            ["--augment", "diffaug", "--diffaug-policy", POLICIES],
            f"--diffaug-policy {POLICIES} lists candidates",
        ),
        (["--augment", "none,diffaug", "--tune-seeds", "9"], "--tune-seeds tunes a grid's candidate lists"),
        (
            ["--augment", "none", "--augment-p", "0.1,0.5", "--tune-seeds", "9"],
            "--augment-p does nothing with any --augment of this grid",
        ),
        (["--augment", "ae", "--augment-p", "0.1,nan", "--tune-seeds", "9"], "--augment-p:"),
        (
            ["--augment", "ae", "--augment-p", "0.1,0.5", "--tune-seeds", "0,9", "--seeds", "0,1"],
            "--tune-seeds 0 is also a seed of the grid's final runs",
        ),
        (
            ["--augment", "ae", "--augment-noise", "0.1,x"],
            "--augment-noise: Expected a float. Got value: x",
        ),
        (
            ["--augment", "ae", "--augment-p", "0.1,x"],
            "--augment-p: Expected one of float, Literal['auto']. Got value: x",
        ),
    ],
)
def test_bad_tuning_requests_are_one_line_errors_that_write_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*args, "--output", str(tmp_path / "grid")], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "grid").exists()


def test_a_candidate_that_failed_on_a_tune_seed_is_not_chosen_and_a_missing_run_leaves_no_choice(
    tmp_path: Path,
) -> None:
    shared = RunConfig(model="gan", data="digits", output=str(tmp_path))
    grid = plan_grid(shared, augments=["diffaug"], train_sizes=None, seeds=[0])
    plan = plan_tuning(shared, grid, {"diffaug_policy": ["color", "cutout", "translation"]}, [8, 9])
    # Validation FD per tune seed (8, 9); None: that run failed. color has the best single number.
    fds = {"color": (5.0, None), "cutout": (7.0, 6.0), "translation": (9.0, 8.0)}
    for cell in plan.cells:
        run_dir = plan.folder / cell.name
        run_dir.mkdir(parents=True)
        fd = fds[dict(cell.options)["diffaug_policy"]][plan.tune_seeds.index(cell.seed)]
        if fd is None:
            (run_dir / "failed.json").write_text(json.dumps({"error": "diverged at step 3"}))
            continue
        summary = {
            "final_metrics": {"val/fd_classifier": fd},
            "headline_metric": "val/fd_classifier",
            "config": plan.runs[cell].config.to_dict(),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    (record,) = choose(plan)
    assert record["chosen"] == {"diffaug_policy": "cutout", "diffaug_cutout": 0.5}
    assert [candidate["mean"] for candidate in record["candidates"]] == [None, 6.5, 8.5]
    assert record["candidates"][0]["runs"][1]["error"] == "diverged at step 3"
    (plan.folder / plan.cells[-1].name / "summary.json").unlink()
    (record,) = choose(plan)
    assert record["chosen"] is None and "its tuning is not finished" in record["problem"]


def test_a_ratio_is_tuned_only_with_the_policies_that_use_it(tmp_path: Path) -> None:
    shared = RunConfig(model="gan", data="digits", output=str(tmp_path))
    grid = plan_grid(shared, augments=["diffaug"], train_sizes=None, seeds=[0])
    lists = {"diffaug_policy": ["color", "translation"], "diffaug_translation": [0.0625, 0.125]}
    (arm,) = plan_tuning(shared, grid, lists, [9]).arms
    # color leaves translation out: its two combinations are one candidate, without the ratio.
    assert [dict(candidate) for candidate in arm.candidates] == [
        {"diffaug_policy": "color"},
        {"diffaug_policy": "translation", "diffaug_translation": 0.0625},
        {"diffaug_policy": "translation", "diffaug_translation": 0.125},
    ]


def test_ada_target_is_tuned_only_with_an_automatic_augment_p(tmp_path: Path) -> None:
    shared = RunConfig(model="gan", data="digits", output=str(tmp_path))
    grid = plan_grid(shared, augments=["ae"], train_sizes=None, seeds=[0])
    lists = {"augment_p": [0.25, "auto"], "ada_target": [0.5, 0.6]}
    (arm,) = plan_tuning(shared, grid, lists, [9]).arms
    assert [(dict(c)["augment_p"], dict(c).get("ada_target")) for c in arm.candidates] == [
        (0.25, None),
        ("auto", 0.5),
        ("auto", 0.6),
    ]
    assert arm.tuned == {"augment_p": [0.25, "auto"], "ada_target": [0.5, 0.6]}


def test_an_option_only_an_automatic_candidate_reads_is_kept_for_it(tmp_path: Path) -> None:
    """`--augment-p 0.25,auto --ada-interval 8`: the fixed candidate leaves --ada-interval unread, the
    automatic one reads it, so the grid takes it; with no automatic candidate it does nothing, refused."""
    lists = {"augment_p": [0.25, "auto"]}
    shared = RunConfig(model="gan", data="digits", output=str(tmp_path), plugin_options={"ada_interval": 8})
    grid = plan_grid(shared, augments=["ae"], train_sizes=None, seeds=[0], candidates=lists)
    tuning = plan_tuning(shared, grid, lists, [9])
    (arm,) = tuning.arms
    intervals = sorted(str(run.config.plugin_options.get("ada_interval")) for run in tuning.runs.values())
    assert intervals == ["8", "None"]
    assert [dict(candidate)["augment_p"] for candidate in arm.candidates] == [0.25, "auto"]
    with pytest.raises(ConfigError, match="ada_interval does nothing with any --augment of this grid"):
        plan_grid(shared, augments=["ae"], train_sizes=None, seeds=[0], candidates={"augment_p": [0.25, 0.5]})


def test_numbers_split_on_commas_and_policies_on_bars() -> None:
    parser = build_parser()
    given = ["--augment-p", "0.1, 0.5|0.75", "--augment-noise", "0.3"]
    given += ["--diffaug-policy", "color,cutout|translation"]
    rest, lists = split_candidates(command_line_values(parser, given))
    assert lists == {"augment_p": [0.1, 0.5, 0.75], "diffaug_policy": ["color,cutout", "translation"]}
    assert rest == {"augment_noise": 0.3}
    with pytest.raises(ConfigError, match="--augment-p candidate list lists 0.1 more than once"):
        split_candidates(command_line_values(parser, ["--augment-p", "0.1,0.10"]))


def test_unequal_numbers_of_candidates_are_reported(tmp_path: Path) -> None:
    for augment in ("ae", "diffaug", "none"):
        write_run(tmp_path, augment, 1000, 0, 20.0)

    def arm(augment: str, reads: list[str], candidates: list[dict], chosen: dict) -> dict[str, Any]:
        values = {option: list(dict.fromkeys(c[option] for c in candidates)) for option in reads}
        return {
            "augment": augment,
            "train_size": 1000,
            "reads": reads,
            "tuned": {option: listed for option, listed in values.items() if len(listed) > 1},
            "tuning_runs": 0 if len(candidates) < 2 else len(candidates),
            "candidates": [{"values": c, "runs": [], "mean": 1.0 + i} for i, c in enumerate(candidates)],
            "chosen": chosen,
            "metric": "val/fd_classifier",
        }

    policies = [{"diffaug_policy": p} for p in ("color", "cutout", "translation")]
    record = {
        "tune_seeds": [9],
        "seeds": [0],
        "arms": [
            arm("ae", ["augment_p"], [{"augment_p": 0.25}], {"augment_p": 0.25}),
            arm("diffaug", ["diffaug_policy"], policies, policies[0]),
            arm("none", [], [{}], {}),
        ],
    }
    (tmp_path / "grid.json").write_text('{"cells": []}')  # a tuning grid writes grid.json first
    (tmp_path / "tuning.json").write_text(json.dumps(record))
    markdown = summarize(tmp_path)["md"].read_text()
    assert "Unequal tuning: the arms had different numbers of candidates (ae 1, diffaug 3)" in markdown
    assert "| ae | 1000 | nothing (one candidate: augment_p=0.25) | 1 | 0 | - | - |" in markdown
    assert "**diffaug_policy=color: 1**; diffaug_policy=cutout: 2" in markdown


def test_a_tuned_arms_final_runs_of_another_value_than_its_choice_are_not_averaged(tmp_path: Path) -> None:
    """A retried tuning cell changed the choice, and the finished final runs ran the old one: the table
    names the mismatch instead of labelling their mean with the new choice."""
    for seed in (0, 1):
        run_dir = write_run(tmp_path, "diffaug", 1000, seed, 30.0 + seed)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["config"]["diffaug_translation"] = 0.0
        (run_dir / "summary.json").write_text(json.dumps(summary))
    candidates = [{"diffaug_translation": 0.0625}, {"diffaug_translation": 0.125}]
    arm = {
        "augment": "diffaug",
        "train_size": 1000,
        "reads": ["diffaug_translation"],
        "tuned": {"diffaug_translation": [0.0625, 0.125]},
        "tuning_runs": 2,
        "candidates": [{"values": c, "runs": [], "mean": 1.0 + i} for i, c in enumerate(candidates)],
        "chosen": candidates[0],
        "metric": "val/fd_classifier",
    }
    (tmp_path / "grid.json").write_text('{"cells": []}')  # a tuning grid writes grid.json first
    (tmp_path / "tuning.json").write_text(json.dumps({"tune_seeds": [9], "seeds": [0, 1], "arms": [arm]}))
    row = next(
        line
        for line in summarize(tmp_path)["md"].read_text().splitlines()
        if line.startswith("| diffaug | 1000 |")
    )
    assert "| not averaged |" in row
    assert "--diffaug-translation chosen 0.0625, but seed 0 ran 0.0, seed 1 ran 0.0" in row


def test_the_summary_reports_the_tuning_cells_as_their_folders_are_when_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "grid"
    args = [*GRID, "--output", str(root)]

    def diffaug_runs() -> dict[str, dict[str, Any]]:
        record = json.loads((root / "tuning.json").read_text())
        (arm,) = [arm for arm in record["arms"] if arm["augment"] == "diffaug"]
        return {run["cell"]: run for candidate in arm["candidates"] for run in candidate["runs"]}

    # A final cell that needs no tuning runs first (array tasks finish in any order): nothing tuned yet.
    assert main([*args, "--grid-index", "2"]) == 0
    stale = (root / "tuning.json").read_bytes()
    assert main(["--summarize", str(root)]) == 0
    assert "the best mean validation headline of its final weights" in (root / "ablation.md").read_text()
    # A tuning cell's array task brings tuning.json up to date.
    assert main([*args, "--grid-index", "0"]) == 0
    runs = diffaug_runs()
    assert "value" in runs[TUNING_CELLS[0]] and runs[TUNING_CELLS[1]]["status"] == "missing"
    assert main(["--summarize", str(root)]) == 0
    markdown = (root / "ablation.md").read_text()
    assert f"{TUNING_CELLS[0]} (missing)" not in markdown and f"{TUNING_CELLS[1]} (missing)" in markdown
    # A record written before the last tuning cell finished (another task's, at the same time) is read
    # again from the folders by the summary, which then names the choice.
    assert main([*args, "--grid-index", "1"]) == 0
    (root / "tuning.json").write_bytes(stale)
    assert main(["--summarize", str(root)]) == 0
    assert all("value" in run for run in diffaug_runs().values())
    markdown = (root / "ablation.md").read_text()
    assert "(missing)" not in markdown.split("## Tuning", 1)[1]
    assert "chosen on val: diffaug_policy=" in markdown


def test_a_second_tuning_grid_into_the_folder_keeps_the_first_ones_arms_and_seeds(tmp_path: Path) -> None:
    """Two tuning grids into one folder (other arms, other seeds): tuning.json keeps every arm's record
    with the tune seeds it was tuned with, and the seeds of both commands' final cells."""
    from types import SimpleNamespace

    from lightning_genae.experiment.ablation.tables import _tuning_lines
    from lightning_genae.experiment.ablation.tuning import write_tuning_record

    def plan(tune_seeds: list[int]) -> Any:
        runs = {"cell": SimpleNamespace(config=RunConfig(max_steps=10))}
        return SimpleNamespace(root=tmp_path, tune_seeds=tune_seeds, runs=runs)

    def choice(augment: str) -> Any:
        record = {
            "augment": augment,
            "train_size": None,
            "reads": ["augment_p"],
            "tuned": {"augment_p": [0.1, 0.5]},
        }
        return {**record, "candidates": [], "chosen": {"augment_p": 0.1}}

    write_tuning_record(plan([100]), [choice("none"), choice("diffaug")], [0, 1])
    write_tuning_record(plan([7]), [choice("none"), choice("ada")], [2])
    record = json.loads((tmp_path / "tuning.json").read_text())
    assert [(arm["augment"], arm["tune_seeds"]) for arm in record["arms"]] == [
        ("diffaug", [100]), ("none", [7]), ("ada", [7])
    ]  # fmt: skip
    assert record["seeds"] == [0, 1, 2]
    text = "\n".join(_tuning_lines(tmp_path, record))
    assert "tune seed(s) 100 for diffaug (full); 7 for none (full); 7 for ada (full)" in text
    assert "with seed(s) 0, 1, 2 for the tables above" in text
    # A record's seeds that are no list (a hand-edited file) read as unknown, not a traceback.
    assert "with seed(s) ? for the tables" in "\n".join(_tuning_lines(tmp_path, {**record, "seeds": 5}))
