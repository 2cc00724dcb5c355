"""Plug-ins from outside the package: docs/plugins.md's module adds a family, a dataset, an augmentation and
a metric, and run.py trains, scores and tables them as it does the built-in ones."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
from forked import Forked, Module, run_forked
from refusals import one_line
from test_python_api import python_blocks
from tiny import TINY_RUN

from lightning_genae.augmentation import AUGMENTATIONS, AugmentationSpec, augmentation_options
from lightning_genae.datamodules import DATASETS, DatasetSpec, dataset_options
from lightning_genae.datamodules.digits import DigitsDataModule
from lightning_genae.datamodules.options import ImageOptions
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.cli import main
from lightning_genae.metrics.feature_set import (
    FEATURE_METRICS,
    Direction,
    FeatureMetricSpec,
    score_feature_sets,
)
from lightning_genae.metrics.names import KINDS, MetricName
from lightning_genae.models import MODELS, ModelSpec
from lightning_genae.models.options import AutoencoderOptions
from lightning_genae.plugin_options import PluginOptions, option
from lightning_genae.plugins import register_augmentation, register_dataset, register_metric, register_model

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SeedOption(PluginOptions):
    seed: int = option(0, "a name RunConfig has")


@dataclass(frozen=True)
class Masked(AutoencoderOptions):
    mask: float = option(0.25, "a family option the parent family does not have", at_least=0, below=1)


@dataclass(frozen=True)
class BetaOption(PluginOptions):
    beta: float = option(1.0, "a name the VAE's options have")


@dataclass(frozen=True)
class OtherP(PluginOptions):
    augment_p: float = option(0.5, "the built-in --augment-p with another default")


@dataclass(frozen=True)
class LookAlikeP(PluginOptions):
    augment_p: float | Literal["auto"] = option(
        0.25, "the built-in --augment-p's type and default, redeclared"
    )


@dataclass(frozen=True)
class SeedsOption(ImageOptions):
    seeds: int = option(3, "a name run.py's grid flag has")


@dataclass(frozen=True)
class NoAnneal(ImageOptions):
    no_augment_anneal: bool = option(False, "the flag that turns --augment-anneal off")


@dataclass(frozen=True)
class OwnChannels(PluginOptions):
    channels: int | None = option(None, "channels, declared again rather than inherited")


def test_the_flags_run_py_has_beside_run_options_are_the_names_no_plugin_may_take():
    from lightning_genae.experiment.arguments import build_parser
    from lightning_genae.experiment.config import COMMAND_LINE_ONLY, CONFIG_FIELDS
    from lightning_genae.experiment.resolve import model_option_names

    plugin_options = model_option_names() | set(dataset_options()) | set(augmentation_options())
    # jsonargparse adds a hidden --print_shtab to a parser at its first parse.
    options = {action.dest for action in build_parser()._actions} - {"print_shtab"}
    assert options - set(CONFIG_FIELDS) - plugin_options == set(COMMAND_LINE_ONLY)


PAGE = REPO / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding my_genae_plugin.py exactly as docs/plugins.md shows it."""
    (block,) = python_blocks(PAGE.read_text())
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_genae_plugin.py").write_text(block)
    return folder


def run_py(
    args: list[str],
    plugin_dir: Path,
    cwd: Path,
    plugins: str = "my_genae_plugin",
    command: Path | Module = REPO / "run.py",
) -> Forked:
    env = {
        **os.environ,
        "GENAE_PLUGINS": plugins,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return run_forked(command, args, env=env, cwd=cwd)


SMALL = ["--width", "8", "--latent-dim", "8", "--batch-size", "32", "--max-steps", "4", "--eval-every", "4",
         "--image-every", "4", "--ckpt-every", "4", "--backbone", "none"]  # fmt: skip


def trained_summary(args: list[str], plugin_dir: Path, tmp_path: Path) -> dict:
    """summary.json of a run.py run of `args` in tmp_path/run, which must succeed."""
    result = run_py([*args, "--output", "run"], plugin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def test_the_plugins_names_and_option_are_in_help(plugin_dir, tmp_path):
    result = run_py(["--help"], plugin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("masked_ae", "squares", "flip", "--mask-ratio", "--flip-p"):
        assert name in result.stdout


@pytest.mark.slow
def test_a_plugin_family_trains_on_a_plugin_dataset_each_with_its_own_option(plugin_dir, tmp_path):
    args = ["--model", "masked_ae", "--data", "squares", "--mask-ratio", "0.5", "--square-side", "6", *SMALL]
    summary = trained_summary(args, plugin_dir, tmp_path)
    assert summary["config"]["model"] == "masked_ae" and summary["config"]["mask_ratio"] == 0.5
    assert summary["config"]["square_side"] == 6
    assert "test/mse" in summary["final_metrics"]
    # The option reaches the data the way a run builds it: 6x6 squares, 36 white pixels each.
    count = (
        "import my_genae_plugin; from lightning_genae.experiment.resolve import resolve; "
        "from lightning_genae.experiment.config import RunConfig; "
        "data = resolve(RunConfig.from_dict({'data': 'squares', 'square_side': 6})).build_datamodule(); "
        "data.setup('fit'); print(int((data.split_tensors('train')[0][0] == 255).sum()))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)])}
    result = run_forked(count, [], env=env)
    assert result.stdout.split()[-1:] == ["36"], result.stderr


@pytest.mark.slow
def test_a_plugin_augmentation_wraps_a_gans_discriminator_inputs_with_its_own_option(plugin_dir, tmp_path):
    args = ["--model", "gan", "--data", "squares", "--augment", "flip", "--flip-p", "0.25", *SMALL]
    result = run_py([*args, "--output", "run"], plugin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    # Named by the augmentation and its options, not a function's address.
    assert "discriminator inputs: flip (--flip-p 0.25)" in result.stdout + result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["augment"] == "flip" and summary["global_step"] > 0
    assert summary["config"]["flip_p"] == 0.25
    assert "flip_p: 0.25" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--augment", "none", "--flip-p", "0.25"], "--flip-p does nothing with --augment none"),
        (["--augment", "flip", "--flip-p", "2"], "--flip-p must lie in [0, 1], got 2.0"),
        (["--data", "digits", "--square-side", "6"], "--square-side does not apply to the dataset digits"),
        (["--square-side", "16"], "--square-side must lie in [1, 16), got 16"),
    ],
)
def test_a_plugins_options_are_checked_as_a_built_in_ones(args, says, plugin_dir, tmp_path):
    result = run_py(["--model", "gan", "--data", "squares", *args, "--print-config"], plugin_dir, tmp_path)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_plugin_metric_is_logged_beside_the_built_in_ones_and_tabled_by_an_ablation(plugin_dir, tmp_path):
    small = [option for option in SMALL if option != "--backbone"]
    small.remove("none")
    args = ["--model", "gan", "--data", "digits", "--augment", "none", "--seeds", "0,1", *small,
            "--eval-samples", "64"]  # fmt: skip
    result = run_py([*args, "--output", "grid"], plugin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):
        metrics = json.loads((tmp_path / "grid" / f"none-tsfull-seed{seed}" / "summary.json").read_text())
        metrics = metrics["final_metrics"]
        for split in ("val", "test"):
            gap, fd = metrics[f"{split}/mean_gap_classifier"], metrics[f"{split}/fd_classifier"]
            # FD is the squared distance of the means plus a covariance term, so it bounds the gap's square.
            assert 0 < gap and gap**2 <= fd + 1e-6
    table = (tmp_path / "grid" / "ablation.md").read_text()
    assert "| mean_gap_classifier |" in table.split("### Final weights")[1]
    # Summarized without the plug-in, the report would lose the metric's column: refused, nothing written.
    again = run_py(["--summarize", "grid"], plugin_dir, tmp_path, plugins="")
    assert again.returncode == 2 and "metric test/mean_gap_classifier" in again.stderr
    assert "GENAE_PLUGINS" in again.stderr and (tmp_path / "grid" / "ablation.md").read_text() == table


def test_a_registered_metric_is_computed_on_the_same_features_as_the_built_ins(clean_registries):
    def mean_gap(real, generated):
        return float((real.mean(0) - generated.mean(0)).norm())

    register_metric("toy_gap", FeatureMetricSpec(mean_gap, Direction.LOWER, "distance between means"))
    generator = torch.Generator().manual_seed(0)
    real, generated = torch.randn(64, 4, generator=generator), torch.randn(64, 4, generator=generator) + 1
    values = score_feature_sets(real, generated)
    assert list(values)[-1] == "toy_gap" and values["toy_gap"] == pytest.approx(mean_gap(real, generated))
    assert MetricName.parse("test/toy_gap_classifier").direction is Direction.LOWER


def test_a_registered_metric_that_returns_no_number_stops_the_evaluation_in_one_line_naming_it(
    clean_registries,
):
    register_metric("toy_bad", FeatureMetricSpec(lambda real, fake: float("nan"), Direction.NONE, "nan"))
    with pytest.raises(ConfigError) as raised:
        score_feature_sets(torch.randn(16, 3), torch.randn(16, 3))
    assert "toy_bad" in str(raised.value) and "returned nan" in str(raised.value)


def test_a_plugin_augmentation_on_a_model_without_a_discriminator_is_refused(plugin_dir, tmp_path):
    args = ["--model", "masked_ae", "--data", "squares", "--augment", "flip", "--print-config"]
    result = run_py(args, plugin_dir, tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "flip" in result.stderr


def test_a_plugin_that_cannot_be_imported_is_one_line_and_exit_2(plugin_dir, tmp_path):
    result = run_py(["--help"], plugin_dir, tmp_path, plugins="no_such_genae_plugin")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "plug-in no_such_genae_plugin" in line and "cannot be imported" in line
    # The installed genae command does not look in the working folder, as python run.py does not either.
    assert "a module in the working folder needs PYTHONPATH=. or an install" in line


@pytest.fixture
def clean_registries():
    registries = (MODELS, DATASETS, AUGMENTATIONS, FEATURE_METRICS, KINDS)
    before = tuple(dict(registry) for registry in registries)
    yield
    for registry, saved in zip(registries, before, strict=True):
        registry.clear()
        registry.update(saved)


@pytest.mark.parametrize(
    ("register", "says"),
    [
        (lambda: register_dataset("digits", DatasetSpec("pkg.mod:Data", "x")), "the name is taken"),
        (lambda: register_dataset("Bad Name", DatasetSpec("pkg.mod:Data", "x")), "lower case letters"),
        (lambda: register_metric("fd", FeatureMetricSpec(len, Direction.LOWER, "x")), "the name is taken"),
        (lambda: register_metric("gap_classifier", FeatureMetricSpec(len, Direction.LOWER, "x")),
         "reads as a backbone's"),
        (lambda: register_metric("Gap", FeatureMetricSpec(len, Direction.LOWER, "x")), "lower case letters"),
        (lambda: register_augmentation("toy", AugmentationSpec("x", side="discriminator", options=OtherP,
                                                               build=lambda options, parts: None)),
         "option augment_p is StrengthOptions's; subclass StrengthOptions to share it"),
        (lambda: register_augmentation("toy", AugmentationSpec("x", side="discriminator", options=LookAlikeP,
                                                               build=lambda options, parts: None)),
         "option augment_p is StrengthOptions's"),
        (lambda: register_augmentation("toy", AugmentationSpec("x", side="discriminator")), "needs build"),
        (lambda: register_augmentation("toy", AugmentationSpec("x", side="data")),
         "a data-side one needs augmenter"),
        (lambda: register_dataset("toy", DatasetSpec("pkg.mod:Data", "x", options=OwnChannels)),
         "option channels is ChannelsOptions's"),
    ],
)  # fmt: skip
def test_a_refused_registration_is_one_line_naming_why(register, says, clean_registries):
    # Refused where it is registered, or where the command line starts and makes every option a flag.
    from lightning_genae.experiment.arguments import build_parser

    with pytest.raises(ConfigError) as raised:
        register()
        build_parser()
    assert says in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("register", "says"),
    [
        (lambda: register_augmentation("toy", AugmentationSpec("x", side="discriminator", options=SeedOption,
                                                               build=lambda options, parts: None)),
         "argument --seed: conflicting option string: --seed"),
        (lambda: register_augmentation("toy", AugmentationSpec("x", side="discriminator", options=BetaOption,
                                                               build=lambda options, parts: None)),
         "conflicting option string: --beta"),
        (lambda: register_dataset("toy", DatasetSpec("pkg.mod:Data", "x", options=SeedsOption)),
         "conflicting option string: --seeds"),
        (lambda: register_dataset("toy", DatasetSpec("pkg.mod:Data", "x", options=NoAnneal)),
         "conflicting option string: --no-augment-anneal"),
    ],
)  # fmt: skip
def test_a_plugin_option_named_as_another_flag_is_refused_by_argparse(register, says, clean_registries):
    from lightning_genae.experiment.arguments import build_parser

    register()
    with pytest.raises(argparse.ArgumentError, match=says):
        build_parser()


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("no_such_module_here:Nope", "No module named 'no_such_module_here'"),
        ("collections:Nope", "Nope"),
        ("collections:OrderedDict", "not a GenerativeModule subclass"),
    ],
)
def test_a_family_registered_at_a_location_that_is_no_family_is_one_line_and_exit_2(
    location, says, clean_registries, tmp_path, capsys
):
    register_model("toy", ModelSpec(location, AutoencoderOptions, "a registration with a wrong location"))
    assert main(["--model", "toy", "--max-steps", "1", "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, f"a family is registered at {location!r}, ", says, "fix the location")
    assert not (tmp_path / "run").exists()


def test_a_family_whose_module_fails_as_it_is_imported_is_one_line_and_exit_2(
    clean_registries, tmp_path, capsys, monkeypatch
):
    (tmp_path / "failing_family_module.py").write_text('raise RuntimeError("boom at import")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    register_model("toy", ModelSpec("failing_family_module:Family", AutoencoderOptions, "fails at import"))
    assert main(["--model", "toy", "--max-steps", "1", "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, "failing_family_module:Family", "RuntimeError: boom at import")
    assert not (tmp_path / "run").exists()


BROKEN_DATASET = """
import numpy as np
import torch
from lightning_genae.datamodules.base import ImageDataModule

class Broken(ImageDataModule):
    name = "toy_data"
    default_shape = (1, 16, 16)
    classes = 2

    def _load_splits(self):
        images = torch.zeros(60, 1, 16, 16, dtype=torch.uint8)
        labels = torch.arange(60) % 2
        splits = {"train": (images[:40], labels[:40]), "val": (images[40:50], labels[40:50]),
                  "test": (images[50:], labels[50:])}
        return MISTAKE(splits)
"""


@pytest.mark.parametrize(
    ("mistake", "says"),
    [
        ("lambda s: {k: (v[0].float() / 255, v[1]) for k, v in s.items()}", "images torch.float32"),
        ("lambda s: {**s, 'train': (s['train'][0], s['train'][1][:-1])}", "labels torch.int64 [39]"),
        ("lambda s: {k: (v[0][..., :8, :8].contiguous(), v[1]) for k, v in s.items()}", "[N, 1, 16, 16]"),
    ],
    ids=["float-images", "labels-short", "not-its-default-shape"],
)
def test_a_plugin_datasets_splits_are_held_to_the_contract_in_one_line(
    mistake, says, clean_registries, tmp_path, capsys, monkeypatch
):
    module = f"broken_dataset_{tmp_path.name}"  # one module per case: an imported one is kept
    (tmp_path / f"{module}.py").write_text(BROKEN_DATASET.replace("MISTAKE", f"({mistake})"))
    monkeypatch.syspath_prepend(str(tmp_path))
    register_dataset("toy_data", DatasetSpec(f"{module}:Broken", "splits that break the contract"))
    args = ["--model", "ae", "--data", "toy_data", "--width", "8", "--batch-size", "8", "--max-steps", "1"]
    assert main([*args, "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, "error: toy_data train: ", says)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("yaml_text", "says"),
    [
        ("model: masked_ae\ndata: digits\n", "--model 'masked_ae' is unknown"),
        ("model: ae\ndata: squares\n", "--data 'squares' is unknown"),
        ("model: gan\naugment: flip\n", "unknown augmentation flip"),
        ("model: ae\nmask_ratio: 0.5\n", "unknown option mask_ratio"),
    ],
)
def test_a_plugins_names_read_without_the_plugin_point_to_genae_plugins(yaml_text, says, tmp_path, capsys):
    from lightning_genae.experiment.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    assert main(["--config", str(config), "--print-config"]) == 2
    one_line(capsys, says, "GENAE_PLUGINS")


@pytest.mark.parametrize(
    "transform",
    [lambda x: x.detach(), lambda x: torch.zeros_like(x), lambda x: x.round(), lambda x: (x, x)],
    ids=["detached", "not-from-its-input", "zero-gradient", "not-a-tensor"],
)
def test_a_plugin_augmentation_that_passes_no_gradient_to_its_input_is_refused_before_training(
    transform, clean_registries, tmp_path, capsys
):
    """The generator learns through a discriminator-side augmentation: without a gradient it would learn
    nothing from the discriminator, with every value finite."""
    spec = AugmentationSpec("broken", side="discriminator", build=lambda options, parts: transform)
    register_augmentation("toy_broken", spec)
    output = tmp_path / "run"
    args = [*TINY_RUN, "--model", "gan", "--augment", "toy_broken", "--max-steps", "2", "--backbone", "none"]
    assert main([*args, "--output", str(output)]) == 2
    one_line(capsys, "--augment toy_broken", "no gradient")
    assert not output.exists()


def test_the_classifier_command_trains_a_plugin_datasets_classifier(plugin_dir, tmp_path):
    classifier = Module("lightning_genae.experiment.classifier")
    args = ["--data", "squares", "--square-side", "6", "--epochs", "1", "--output", "weights"]
    result = run_py(args, plugin_dir, tmp_path, command=classifier)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "weights" / "classifiers.json").read_text())
    assert (tmp_path / "weights" / manifest["squares"]["file"]).is_file()
    assert manifest["squares"]["command"].startswith("GENAE_PLUGINS=my_genae_plugin python -m ")
    assert " --data squares --square-side 6 --seed 0 " in manifest["squares"]["command"]
    for refused, says in (
        (["--data", "squares", "--square-side", "16"], "--square-side must lie in [1, 16), got 16"),
        (["--data", "digits", "--square-side", "6"], "--square-side does not apply to the dataset digits"),
    ):
        answer = run_py([*refused, "--output", "other"], plugin_dir, tmp_path, command=classifier)
        (line,) = answer.stderr.strip().splitlines()
        assert answer.returncode == 2 and says in line, line
        assert not (tmp_path / "other").exists()
    broken = run_py(args, plugin_dir, tmp_path, plugins="no_such_genae_plugin", command=classifier)
    (line,) = broken.stderr.strip().splitlines()
    assert broken.returncode == 2 and "plug-in no_such_genae_plugin" in line


@dataclass(frozen=True)
class StampOptions(ImageOptions):
    filled: bool = option(True, "stamps: fill the stamp")
    pattern: str = option("plain", "stamps: the stamp's pattern")
    shade: Literal["dark", "light"] = option("dark", "stamps: the stamp's shade")
    contrast: float | Literal["auto"] = option("auto", "stamps: the stamp's contrast, or auto")
    repeats: int | Literal["auto"] = option("auto", "stamps: stamps per image, or auto", at_least=1)


def test_the_classifier_command_takes_yes_no_and_text_options_and_records_a_command_that_parses_back(
    clean_registries, capsys
):
    from lightning_genae.experiment.classifier import build_parser, main, reproduce_command

    register_dataset("stamps", DatasetSpec("pkg.mod:Stamps", "toy stamps", options=StampOptions))
    given = ["--data", "stamps", "--no-filled", "--pattern", "a b", "--shade", "light", "--contrast", "0.5"]
    args = build_parser().parse_args([*given, "--output", "out dir"])
    command = reproduce_command(args)
    assert command == (
        "python -m lightning_genae.experiment.classifier --data stamps --no-filled --pattern 'a b' "
        "--shade light --contrast 0.5 --seed 0 --output 'out dir'"
    )
    assert build_parser().parse_args(shlex.split(command)[3:]) == args
    with pytest.raises(ConfigError, match="^--shade: "):
        build_parser().parse_args(["--data", "stamps", "--shade", "grey", "--output", "x"])
    assert (
        build_parser().parse_args(["--data", "stamps", "--contrast", "auto", "--output", "x"]).contrast
        == "auto"
    )
    with pytest.raises(ConfigError, match="^--contrast: "):
        build_parser().parse_args(["--data", "stamps", "--contrast", "high", "--output", "x"])
    # A whole number or auto: each read as such, from the command line and from a file.
    for given, read in (("3", 3), ("auto", "auto")):
        assert (
            build_parser().parse_args(["--data", "stamps", "--repeats", given, "--output", "x"]).repeats
            == read
        )
    with pytest.raises(ConfigError, match="^--repeats: "):
        build_parser().parse_args(["--data", "stamps", "--repeats", "2.5", "--output", "x"])
    assert StampOptions.parse({"repeats": "auto"}).repeats == "auto"
    with pytest.raises(ConfigError, match=r"^repeats 2.5 is not of type int"):
        StampOptions.parse({"repeats": 2.5})
    with pytest.raises(ConfigError, match=r"^repeats must lie in \[1, inf\), got 0"):
        StampOptions.parse({"repeats": 0})
    assert main(["--data", "csv", "--pattern", "x", "--output", "x"]) == 2
    one_line(capsys, "pattern does not apply to the dataset csv (sequence data)")


def test_a_plain_runs_config_yaml_made_with_plugins_loaded_runs_without_them(plugin_dir, tmp_path):
    result = run_py(["--model", "gan", "--data", "digits", *SMALL, "--output", "run"], plugin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert "flip_p" not in written and "square_side" not in written and "mask_ratio" not in written
    again = run_py(["--config", "run/config.yaml", "--print-config"], plugin_dir, tmp_path, plugins="")
    assert again.returncode == 0, again.stderr
    # Its checkpoint, which records the plug-ins' unused options as None, is evaluated and resumed too.
    checkpoint = "run/checkpoints/last.ckpt"
    evaluated = run_py(["--evaluate", checkpoint, "--output", "eval"], plugin_dir, tmp_path, plugins="")
    assert evaluated.returncode == 0, evaluated.stderr
    resumed = run_py(["--resume", checkpoint, "--max-steps", "5"], plugin_dir, tmp_path, plugins="")
    assert resumed.returncode == 0, resumed.stderr


@dataclass(frozen=True)
class NoisyOptions(ImageOptions):
    pixel_noise: float = option(0.0, "noisy: noise added to each pixel", at_least=0)


class NoisyDigits(DigitsDataModule):
    """A plug-in DataModule that takes its own option out of **kwargs before passing the rest on."""

    def __init__(self, **kwargs):
        self.pixel_noise = kwargs.pop("pixel_noise", 0.0)
        super().__init__(**kwargs)


def test_build_datamodule_takes_a_plugins_declared_option_read_from_its_kwargs(clean_registries, tmp_path):
    from lightning_genae.datamodules import build_datamodule

    register_dataset(
        "noisy", DatasetSpec(f"{__name__}:NoisyDigits", "digits with noise", options=NoisyOptions)
    )
    data = build_datamodule("noisy", pixel_noise=0.5, batch_size=8, data_dir=tmp_path)
    assert data.pixel_noise == 0.5 and data.batch_size == 8
    with pytest.raises(TypeError, match="pixel_nosie"):
        build_datamodule("noisy", pixel_nosie=0.5, data_dir=tmp_path)


def test_a_family_registered_as_generating_that_does_not_sample_is_one_line_and_exit_2(
    clean_registries, tmp_path, capsys
):
    """generates decides the generative metrics, --backbone and what a resume may change, without importing
    the module, and defaults to True: an autoencoder registered with it is refused before a run starts."""
    register_model(
        "toy", ModelSpec("lightning_genae.models.ae:AutoencoderModule", AutoencoderOptions, "an autoencoder")
    )
    assert main(["--model", "toy", *TINY_RUN, "--max-steps", "1", "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, "generates=False")
    assert not (tmp_path / "run").exists()


def test_a_python_lookup_imports_the_plugins_genae_plugins_names(plugin_dir, tmp_path):
    """`MODELS['masked_ae']` and `build_datamodule('squares')` in Python find what run.py finds."""
    script = (
        "from lightning_genae.models import MODELS\n"
        "from lightning_genae.datamodules import build_datamodule\n"
        "print(MODELS['masked_ae'].description)\n"
        "print(type(build_datamodule('squares', data_dir='.')).__name__)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)]),
        "GENAE_PLUGINS": "my_genae_plugin",
    }
    result = run_forked(script, [], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["autoencoder", "of", "partly", "hidden", "inputs", "SquaresDataModule"]
