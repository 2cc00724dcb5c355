"""The resolve seam: `resolve(config) -> ResolvedRun` checks a RunConfig once and fills every default.

Also the two things built on it: `--print-config` (what resolve returns, as YAML, re-runnable through
`--config`) and `--help` (each default shown from where it is declared).
"""

import copy
import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lightning_genae.augmentation import AUGMENTATIONS, option_defaults
from lightning_genae.errors import ConfigError, OptionError
from lightning_genae.experiment.arguments import config_file_values
from lightning_genae.experiment.cli import build_parser, main
from lightning_genae.experiment.config import CONFIG_FIELDS, DEFAULT_MAX_STEPS, RunConfig, resume_conflicts
from lightning_genae.experiment.resolve import resolve
from lightning_genae.models import MODELS
from lightning_genae.models.ae import AutoencoderOptions
from lightning_genae.models.gan import GANOptions
from lightning_genae.models.options import AAEOptions, BEGANOptions, with_default
from lightning_genae.models.vae import VAEOptions

pytestmark = pytest.mark.quick

AUGMENT_DEFAULTS = option_defaults()


def option_of(config: RunConfig, name: str):
    """A plug-in option's value in a configuration (None: not set)."""
    return config.plugin_options.get(name)


def family_default(options: type, name: str):
    return {spec.name: spec.default for spec in dataclasses.fields(options)}[name]


def test_resolve_returns_a_new_complete_value_and_leaves_its_input_alone():
    given_options = {"beta": 0.5}
    config = RunConfig(model="vae", data="digits", augment="ae", plugin_options=given_options)
    before = copy.deepcopy(config)
    resolved = resolve(config)
    assert config == before and given_options == {"beta": 0.5}
    assert resolved.config is not config
    # Every default filled in: the step budget, the family's options, the augmentation's options.
    assert resolved.config.max_steps == DEFAULT_MAX_STEPS
    assert resolved.options == VAEOptions(beta=0.5)
    family = {
        key: value for key, value in resolved.config.plugin_options.items() if key in VAEOptions.types()
    }
    assert family == VAEOptions(beta=0.5).to_dict()
    assert option_of(resolved.config, "augment_p") == AUGMENT_DEFAULTS["augment_p"]
    assert option_of(resolved.config, "augmenter_steps") == AUGMENT_DEFAULTS["augmenter_steps"]
    assert resolved.augment.names == ("ae",) and resolved.augment.p == AUGMENT_DEFAULTS["augment_p"]
    assert resolved.model is MODELS["vae"]
    # Options of an augmentation the run does not use stay unset, so config.yaml shows only what acts.
    assert option_of(resolved.config, "diffaug_policy") is None
    assert option_of(resolved.config, "augment_pool") is None
    # Resolving a resolved configuration changes nothing.
    assert resolve(resolved.config) == resolved


def test_resolve_keeps_what_was_given():
    resolved = resolve(
        RunConfig.from_dict(dict(model="gan", max_epochs=2, augment="diffaug", diffaug_policy="color"))
    )
    assert resolved.config.max_steps is None and resolved.config.max_epochs == 2
    assert option_of(resolved.config, "diffaug_policy") == "color"
    assert resolved.augment.settings["diffaug"].diffaug_policy == "color"
    assert option_of(resolved.config, "augment_p") is None, "diffaug reads no --augment-p"
    assert resolved.options == GANOptions()


def test_diffaug_ratios_reach_the_plan_its_transform_and_config_yaml():
    resolved = resolve(
        RunConfig.from_dict(
            dict(model="gan", augment="diffaug", diffaug_translation=0.25, diffaug_cutout=0.0)
        )
    )
    ratios = ("diffaug_translation", "diffaug_cutout")
    assert tuple(option_of(resolved.config, name) for name in ratios) == (0.25, 0.0)
    transform = AUGMENTATIONS["diffaug"].build(resolved.augment.settings["diffaug"], None)
    assert (transform.translation, transform.cutout) == (0.25, 0.0)
    defaults = resolve(RunConfig(model="gan", augment="diffaug")).config
    assert tuple(option_of(defaults, name) for name in ratios) == (0.125, 0.5)


def test_a_ratio_of_an_operation_the_policy_leaves_out_is_an_error_and_a_grid_cell_drops_it():
    config = RunConfig.from_dict(
        dict(model="gan", augment="diffaug", diffaug_policy="color, cutout", diffaug_translation=0.25)
    )
    with pytest.raises(
        ConfigError, match="color,cutout leaves out; drop it or add translation to diffaug_policy"
    ):
        resolve(config)
    # Every option the policy leaves unread is named in the one refusal.
    ratios_given = dict(diffaug_translation=0.25, diffaug_cutout=0.5)
    both = RunConfig.from_dict(dict(model="gan", augment="diffaug", diffaug_policy="color", **ratios_given))
    with pytest.raises(ConfigError, match=r"^diffaug_translation .*\. Also: diffaug_cutout sizes "):
        resolve(both)
    # A mistyped choice (a config file's) decides what is read: it is named, not the option it would leave
    # unread at its default.
    mistyped = RunConfig.from_dict(dict(model="gan", augment="ae", augment_mode="offlin", augment_pool=100))
    with pytest.raises(OptionError, match="is not one of: online, offline") as refused:
        resolve(mistyped)
    assert refused.value.option == "augment_mode"
    # A grid shares its options among cells; the grid checks that some cell reads each one.
    cell = resolve(config, drop_unused_augment_options=True)
    assert option_of(cell.config, "diffaug_translation") is None
    assert option_of(cell.config, "diffaug_cutout") == 0.5


BAD_CONFIGS = {
    "unknown model": (dict(model="nope"), ["model 'nope' is unknown", "choose from ae"]),
    "unknown dataset": (dict(data="nope"), ["data 'nope' is unknown", "choose from digits"]),
    "unknown augmentation": (dict(augment="nope"), ["'nope': unknown augmentation", "choose from none"]),
    "unknown model option": (dict(depth=3), ["depth does not apply", "GENAE_PLUGINS"]),
    "option of another family": (
        dict(model="gan", denoise=0.1),
        ["denoise", "--model gan", "drop it"],
    ),
    "augmentation option with no augmentation": (
        dict(augment="none", augment_p=0.3),
        ["augment_p", "--augment none", "drop it"],
    ),
    "augmentation option another augmentation reads": (
        dict(augment="diffaug", augment_noise=0.1),
        ["augment_noise", "--augment diffaug", "drop it"],
    ),
    "pool size in online mode": (
        dict(augment="ae", augment_pool=100),
        ["augment_pool", "augment_mode offline"],
    ),
    "discriminator augmentation without a discriminator of images": (
        dict(model="ae", augment="diffaug"),
        ["--augment diffaug", "--model ae", "use --model gan"],
    ),
    "augmenter on the inputs of a vae": (
        dict(model="vae", augment="ae-d"),
        ["--model vae", "use --model gan"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_configuration_is_one_line_naming_the_fix(name):
    values, expected = BAD_CONFIGS[name]
    with pytest.raises(ConfigError) as error:
        resolve(RunConfig.from_dict(values))
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    for text in expected:
        assert text in message, message


def test_drop_unused_augment_options_leaves_them_out_instead_of_refusing():
    values = dict(model="gan", augment="diffaug", augment_p=0.3, augment_noise=0.1)
    config = RunConfig.from_dict(values)
    with pytest.raises(ConfigError):
        resolve(config)
    resolved = resolve(config, drop_unused_augment_options=True)
    assert (
        option_of(resolved.config, "augment_p") is None
        and option_of(resolved.config, "augment_noise") is None
    )
    assert option_of(resolved.config, "diffaug_policy") == AUGMENT_DEFAULTS["diffaug_policy"]
    # Dropping only covers options no chosen augmentation reads: a bad value of a used one still fails.
    with pytest.raises(ConfigError):
        resolve(
            RunConfig.from_dict({**values, "augment": "ae", "augment_p": 2.0}),
            drop_unused_augment_options=True,
        )


NON_FINITE = {
    "--lr nan": dict(model="gan", lr=math.nan),
    "--lr inf": dict(model="ae", lr=math.inf),
    "--ema nan": dict(model="gan", ema=math.nan),
    "--beta nan": dict(model="vae", beta=math.nan),
    "--beta inf": dict(model="vae", beta=math.inf),
    "--denoise nan": dict(model="ae", denoise=math.nan),
    "--augment-noise nan": dict(augment="ae", augment_noise=math.nan),
    "--augment-noise inf": dict(augment="ae", augment_noise=math.inf),
    "--augment-p nan": dict(augment="ae", augment_p=math.nan),
    "--augment-interp inf": dict(augment="ae", augment_interp=math.inf),
}


@pytest.mark.parametrize("name", list(NON_FINITE))
def test_a_float_option_must_be_finite(name):
    with pytest.raises(OptionError, match="finite") as error:
        resolve(RunConfig.from_dict(NON_FINITE[name]))
    assert error.value.option == name.split()[0].removeprefix("--").replace("-", "_")


@pytest.mark.parametrize("args", [["--lr", "nan"], ["--model", "vae", "--beta", "inf"], ["--ema", "nan"]])
def test_a_non_finite_flag_exits_2_with_one_line(args, capsys):
    assert main([*args, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and args[-2] in err, err


@pytest.mark.parametrize("value", [".inf", ".nan", "1e400"])
def test_an_integer_option_from_a_config_file_must_be_a_finite_integer(value, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model: gan\nmax_steps: {value}\n")
    assert main(["--config", str(config), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-steps" in err and "Traceback" not in err, err


def test_print_config_round_trips_through_config(tmp_path, capsys):
    args = [
        "--model",
        "vae",
        "--beta",
        "0.5",
        "--augment",
        "ae",
        "--augment-noise",
        "0.2",
        "--max-steps",
        "7",
    ]
    assert main([*args, "--print-config"]) == 0
    printed = capsys.readouterr().out
    values = yaml.safe_load(printed)
    assert values["beta"] == 0.5 and values["augment_noise"] == 0.2 and values["max_steps"] == 7
    assert values["recon_loss"] == family_default(VAEOptions, "recon_loss"), "family defaults are printed"
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    assert main(["--config", str(path), "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    assert resolve(RunConfig.from_dict(values)).config == RunConfig.from_dict(values)


def test_print_config_prints_the_absolute_paths_config_yaml_records(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["--model", "ae", "--data-dir", "~/mnist", "--output", "runs/a", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data_dir"] == str(tmp_path / "home" / "mnist")
    # As config.yaml: without the invocation's own folder, so a file saved from it starts runs of their own.
    assert printed["output"] is None


def test_a_config_yaml_with_its_keys_in_another_order_resolves_to_the_same_values(capsys):
    # This file lists the augmentation options between the data and the hardware options; the config.yaml
    # a run writes lists them with the other plug-ins' options. Key order is not part of the format.
    path = Path(__file__).parents[1] / "cases" / "config-ae-diffaug.yaml"
    written = yaml.safe_load(path.read_text())
    assert written["augment_p"] == 0.3 and written["diffaug_policy"] == "color,cutout"
    assert main(["--config", str(path), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {key: printed[key] for key in written} == written
    # Options declared after the file was written take their defaults, as on a command line without them.
    newer = set(printed) - set(written) - {"data_dir"}
    assert main(["--model", written["model"], "--augment", written["augment"], "--print-config"]) == 0
    defaults = yaml.safe_load(capsys.readouterr().out)
    assert {key: printed[key] for key in newer} == {key: defaults[key] for key in newer}


def help_of_each_flag() -> dict[str, str]:
    """`--flag` -> its help line, with the whitespace argparse wraps it in collapsed."""
    parser = build_parser()
    return {
        flag: " ".join((action.help or "").split())
        for action in parser._actions
        for flag in action.option_strings
    }


def test_help_shows_each_family_default_from_its_options_class():
    helps = help_of_each_flag()
    assert f"gan {family_default(GANOptions, 'lr')}" in helps["--lr"]
    assert f"ae {family_default(AutoencoderOptions, 'lr')}" in helps["--lr"]
    assert f"[default: {family_default(VAEOptions, 'beta')}]" in helps["--beta"]
    assert f"[default: {family_default(GANOptions, 'ema')}]" in helps["--ema"]


def test_help_follows_a_changed_family_default(monkeypatch):
    # The default shown is read from the family's options class, not written down a second time.
    @dataclass(frozen=True)
    class SlowerGANOptions(GANOptions):
        lr: float = with_default(GANOptions, "lr", 0.000123)

    monkeypatch.setitem(MODELS, "gan", dataclasses.replace(MODELS["gan"], options=SlowerGANOptions))
    assert "gan 0.000123" in help_of_each_flag()["--lr"]


def test_help_shows_every_run_option_default_from_run_config():
    helps = help_of_each_flag()
    defaults = RunConfig()
    for name in CONFIG_FIELDS:
        value = getattr(defaults, name)
        if value is None or isinstance(value, bool) or name == "data_dir":
            continue  # no default to show, a switch, or one that depends on the environment
        shown = ",".join(value) if isinstance(value, list) else str(value)
        flag = "--" + name.replace("_", "-")
        assert f"[default: {shown}]" in helps[flag], (flag, helps[flag])
    assert re.search(rf"\[default: {DEFAULT_MAX_STEPS} unless --max-epochs\]", helps["--max-steps"])


def test_a_plugin_options_default_is_shown_as_made_and_a_switch_as_its_flag():
    from lightning_genae.plugin_options import PluginOptions, help_with_default, option

    @dataclass(frozen=True)
    class Made(PluginOptions):
        sizes: list[int] = option(lambda: [2, 4], "sizes", at_least=1)
        mirror: bool = option(False, "mirror")

    specs = Made.__dataclass_fields__
    assert help_with_default("sizes", specs["sizes"]) == "sizes [default: 2,4]"
    assert help_with_default("mirror", specs["mirror"]) == "mirror [default: --no-mirror]"


def test_a_resumed_runs_plugin_options_are_compared_as_the_checkpoint_holds_them(tmp_path):
    stored = {"augmenter_steps": 30, "augment_p": 0.25, "diffaug_policy": "color", "seq_len": None}
    # A config file's quoted numbers are read as the options' types: the same options.
    config = tmp_path / "c.yaml"
    config.write_text('augmenter_steps: "30"\naugment_p: "0.25"\nseq_len: null\n')
    assert resume_conflicts(stored, config_file_values(build_parser(), str(config))) == []
    # Another value, or another kind of value, is not.
    assert resume_conflicts(stored, {"augmenter_steps": 31, "augment_p": "auto"}) == [
        "--augmenter-steps 31 (checkpoint: 30)",
        "--augment-p auto (checkpoint: 0.25)",
    ]
    # A run without augmentation holds none of its options: they read as unset, not as None.
    assert resume_conflicts({"augment_p": None}, {"augment_p": 0.3}) == [
        "--augment-p 0.3 (checkpoint: unset)"
    ]


def test_an_option_the_family_leaves_unread_is_refused_by_value_and_by_name():
    paper = {"gan_nets": "paper", "gan_training": "paper"}
    # Another value than the default: refused wherever options are parsed (a run, a module's keywords).
    with pytest.raises(ConfigError, match=r"^lr is ignored by .*drop lr or gan_training paper$"):
        GANOptions.parse({**paper, "lr": 0.01})
    # The default value: only a name on the command line tells it from an option left unset.
    assert GANOptions.parse({**paper, "lr": 5e-4}).lr == 5e-4
    with pytest.raises(ConfigError, match="drop lr or gan_training paper"):
        GANOptions.parse({**paper, "lr": 5e-4}, given={"lr"})
    config = RunConfig.from_dict({"model": "gan", "data": "digits", **paper, "lr": 5e-4})
    assert resolve(config).options.lr == 5e-4
    with pytest.raises(ConfigError, match="drop lr or gan_training paper"):
        resolve(config, named={"lr"})


def test_an_unread_option_is_refused_as_unread_before_its_value_is_checked(capsys):
    paper = {"gan_nets": "paper", "gan_training": "paper"}
    # Out of range and unread: the fix is to drop it, so that is what the run says, not its range.
    with pytest.raises(ConfigError, match=r"^lr is ignored by .*drop lr or gan_training paper$"):
        GANOptions.parse({**paper, "lr": -1.0})
    with pytest.raises(ConfigError, match=r"^width sizes the conv nets, .*gan_nets paper$"):
        GANOptions.parse({"gan_nets": "paper", "width": 0})
    with pytest.raises(ConfigError, match=r"^began_gamma is read only with d_loss began"):
        BEGANOptions.parse({"d_loss": "ebgan", "began_gamma": 2.0})
    # Read, it is checked as before.
    with pytest.raises(OptionError, match=r"^lr must lie in \(0, inf\), got -1.0"):
        GANOptions.parse({"lr": -1.0})
    with pytest.raises(OptionError, match=r"^began_gamma must lie in \(0, 1\], got 2.0"):
        BEGANOptions.parse({"began_gamma": 2.0})
    # A value that fails its own check decides nothing: the nets stay the default conv ones, which read
    # width, so width is not called unread (both values are then checked).
    with pytest.raises(OptionError, match=r"^width must lie in \[1, inf\)"):
        GANOptions.parse({"gan_nets": "papers", "width": 0})
    with pytest.raises(OptionError, match=r"^gan_nets 'papers' is not one of: dcgan, paper$"):
        GANOptions.parse({"gan_nets": "papers", "width": 32})
    # A mistyped choice (a config file's; argparse checks the command line's) decides what is read: it is
    # named itself, not an option its default would leave unread.
    with pytest.raises(OptionError, match=r"^d_loss 'ebgn' is not one of: began, ebgan$"):
        BEGANOptions.parse({"d_loss": "ebgn", "ebgan_margin": 0.5})
    base = ["--model", "gan", "--data", "digits", "--gan-nets", "paper", "--print-config"]
    assert main([*base, "--width", "0"]) == 2
    assert "drop width or gan_nets paper" in capsys.readouterr().err


def test_a_check_of_several_options_that_no_failing_value_takes_part_in_is_reported_first():
    # width 0 fails its own check, but the fix that matters is gan_nets paper, which leaves width unread:
    # fixing width first would be a wasted try.
    with pytest.raises(ConfigError, match=r"^gan_training paper needs gan_nets paper: add gan_nets paper$"):
        GANOptions.parse({"gan_training": "paper", "width": 0})
    # A check that names a failing option ran on its default, not on the value given: the value is named.
    with pytest.raises(OptionError, match=r"^aae_components must lie in \[2, inf\), got 1"):
        AAEOptions.parse({"aae_prior": "mixture", "aae_components": 1, "latent_dim": 3})


def width_unread_line(nets: str) -> str:
    return f"width sizes the conv nets, which {nets} leaves out; drop width or {nets}"


def test_one_refusal_gives_each_unread_options_own_reason():
    paper = {"gan_nets": "paper", "gan_training": "paper"}
    with pytest.raises(ConfigError) as refused:
        GANOptions.parse({**paper, "lr": 1e-3, "width": 16})
    first, second = str(refused.value).split(". Also: ")
    assert first.startswith("lr is ignored by") and first.endswith("drop lr or gan_training paper")
    assert second == width_unread_line("gan_nets paper")
    # Options unread for the same reason share it.
    with pytest.raises(ConfigError, match=r"or drop it \(the same for aae_supervised\)$"):
        AAEOptions.parse({"aae_components": 5, "aae_supervised": True})


def test_a_resumed_run_refuses_an_option_it_does_not_read(tmp_path, capsys):
    run = ["--model", "gan", "--data", "digits", "--gan-nets", "paper", "--batch-size", "16"]
    assert main([*run, "--max-steps", "2", "--eval-every", "2", "--output", str(tmp_path)]) == 0
    capsys.readouterr()
    checkpoint = str(tmp_path / "checkpoints" / "last.ckpt")
    # --width at the checkpoint's value is no conflict, but the run does not read it.
    assert main(["--resume", checkpoint, "--max-steps", "4", "--width", "64"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --width ") and "drop width" in error, error
    assert len(error.splitlines()) == 1


def test_a_subclass_keeps_its_familys_unread_options():
    @dataclass(frozen=True)
    class PaperGANWithLabels(GANOptions):
        labels: bool = False

        def unread(self) -> dict[str, str]:
            return {**super().unread(), "labels": "needs class labels"}

    with pytest.raises(ConfigError, match="drop width or gan_nets paper"):
        PaperGANWithLabels.parse({"gan_nets": "paper", "width": 32})
    with pytest.raises(ConfigError, match="needs class labels"):
        PaperGANWithLabels.parse({"labels": True})


def test_a_grid_reports_its_own_errors_before_an_unread_family_option(capsys):
    base = ["--model", "gan", "--data", "digits", "--gan-nets", "paper", "--gan-training", "paper"]
    assert main([*base, "--lr", "5e-4", "--augment", "none,ae", "--seeds", "0,0", "--print-config"]) == 2
    assert "--seeds lists 0 more than once" in capsys.readouterr().err
    assert main([*base, "--lr", "5e-4", "--augment", "none,ae", "--seeds", "0,1", "--print-config"]) == 2
    assert "drop lr or gan_training paper" in capsys.readouterr().err
