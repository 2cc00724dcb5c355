"""The paper protocols of bench/reproduce_protocols.py: end to end on tiny files in the real formats."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_datamodules import write_fake_celeba, write_fake_cifar

from lightning_genae.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "reproduce_protocols.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_protocols", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


protocols = load_script()


def table_rows(text: str) -> dict[str, list[str]]:
    """The Markdown rows of a printed table, by arm label: [published, ours]."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("arm", "---"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("paper", sorted(protocols.PROTOCOLS))
def test_missing_data_prints_the_published_figure_an_empty_ours_cell_and_one_line(
    paper: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = protocols.main(["--paper", paper, "--data-dir", str(tmp_path), "--output", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == ConfigError.exit_code == 2
    assert err.count("\n") == 1 and "--data-dir" in err and str(tmp_path) in err
    rows = table_rows(out)
    protocol = protocols.PROTOCOLS[paper]
    assert [rows[arm.label] for arm in protocol.arms] == [[arm.published, ""] for arm in protocol.arms]
    assert "published metric" in out and "our metric" in out
    assert not (tmp_path / "r").exists()


def test_published_figures_name_their_backbone_and_ours_says_when_it_differs() -> None:
    diffaug = protocols.PROTOCOLS["diffaug"]
    assert [arm.published for arm in diffaug.arms] == ["39.78 (BigGAN)", "22.40 (BigGAN)"]
    assert diffaug.train_size == 5000 and diffaug.image_size == 32
    for protocol in protocols.PROTOCOLS.values():
        assert "Inception" in protocol.published_metric or "none" in protocol.published_metric
        text = protocols.table(protocol, protocols.metric_name(protocol, None), {}, "")
        assert "Inception" in text
    assert protocols.metric_name(diffaug, "weights.pth") == "fid_inception"


def run_smoke(paper: str, data_dir: Path, root: Path, capsys: pytest.CaptureFixture) -> dict[str, list[str]]:
    argv = ["--paper", paper, "--data-dir", str(data_dir), "--device", "cpu", "--seeds", "0"]
    code = protocols.main([*argv, "--output", str(root), "--smoke", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    return table_rows(out)


@pytest.mark.slow
@pytest.mark.parametrize("paper", ["diffaug", "ada"])
def test_cifar_protocol_trains_each_arm_and_fills_ours_from_the_runs(
    paper: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_fake_cifar(tmp_path / "data")
    rows = run_smoke(paper, tmp_path / "data", tmp_path / "runs", capsys)
    protocol = protocols.PROTOCOLS[paper]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("summary.json")]
    assert sorted(s["augment"] for s in summaries) == sorted(arm.augment for arm in protocol.arms)
    for arm in protocol.arms:
        published, ours = rows[arm.label]
        assert published == arm.published
        (summary,) = [s for s in summaries if s["augment"] == arm.augment]
        value = summary["final_metrics"]["test/fd_classifier"]
        assert ours == f"{value:.2f} ± n/a (n=1)"
    if paper == "diffaug":
        (augmented,) = [s for s in summaries if s["augment"] == "diffaug"]
        assert augmented["config"]["diffaug_policy"] == "translation,cutout"


def test_vaegan_protocol_trains_on_celeba_and_reports_the_reconstruction_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_fake_celeba(tmp_path / "data", partitions=(0,) * 9 + (1, 2, 2))  # batch 8 fits
    rows = run_smoke("vaegan", tmp_path / "data", tmp_path / "runs", capsys)
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("summary.json")]
    assert summary["model"] == "vaegan" and summary["data"] == "celeba"
    assert rows["VAE-GAN"] == [
        "- (qualitative only)",
        f"{summary['final_metrics']['test/mse']:.2f} ± n/a (n=1)",
    ]


def test_ours_reads_only_the_seeds_asked_for_and_prefers_the_test_value(tmp_path: Path) -> None:
    for augment, seed, final in [
        ("none", 0, {"test/fd_classifier": 10.0, "val/fd_classifier": 99.0}),
        ("none", 1, {"val/fd_classifier": 14.0}),
        ("none", 2, {"test/fd_classifier": 500.0}),  # an earlier command's seed
        ("diffaug", 0, {"test/kid_classifier": 1.0}),  # no value of the metric: not counted
    ]:
        folder = tmp_path / f"{augment}-seed{seed}"
        folder.mkdir()
        summary = {"augment": augment, "seed": seed, "final_metrics": final}
        (folder / "summary.json").write_text(json.dumps(summary))
    values = protocols.collect(tmp_path, "fd_classifier", {0, 1})
    assert values == {"none": [10.0, 14.0]}
    assert protocols.format_ours(values["none"]) == "12.00 ± 2.83 (n=2)"


def test_cuda_without_a_gpu_is_one_line_naming_the_scripts_own_option(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default --device cuda on a machine without a GPU failed every cell with run.py's line, which
    names run.py's --accelerator; the script says it once, before any cell, naming its --device cpu."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_fake_celeba(tmp_path / "data", partitions=(0,) * 9 + (1, 2, 2))
    argv = ["--paper", "vaegan", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "runs")]
    assert protocols.main(argv) == 2
    err = capsys.readouterr().err
    assert "no GPU is visible here" in err and "--device cpu" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()
