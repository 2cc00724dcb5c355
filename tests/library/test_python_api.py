import sys
import warnings

import pytest
import torch

import lightning_genae
from lightning_genae.errors import ConfigError, OptionError
from lightning_genae.models.gan import GANModule


def test_trainer_kwargs_counts_iterations_not_optimizer_steps():
    kwargs = lightning_genae.trainer_kwargs(GANModule, iterations=50)
    assert kwargs["max_steps"] == 50 * GANModule.optimizer_steps_per_iteration == 100


@pytest.mark.parametrize(("iterations", "error"), [(0, ValueError), (2.5, TypeError), (None, TypeError)])
def test_trainer_kwargs_rejects_a_budget_that_is_not_a_positive_count(iterations, error):
    # A float budget would be cut to a whole number of iterations without a word.
    with pytest.raises(error):
        lightning_genae.trainer_kwargs(GANModule, iterations=iterations)


def test_trainer_kwargs_validates_by_iteration_across_epochs():
    kwargs = lightning_genae.trainer_kwargs(GANModule, iterations=20, eval_every=10)
    assert kwargs["val_check_interval"] == 10 and kwargs["check_val_every_n_epoch"] is None
    with pytest.raises(ValueError, match="eval_every"):
        lightning_genae.trainer_kwargs(GANModule, iterations=20, eval_every=0)


@pytest.mark.parametrize("family", ["vae", "gan", "aae", "vaegan", "began", "ae"])
def test_sampling_and_reconstructing_run_in_eval_mode_and_leave_the_model_as_it_was(family):
    from lightning_genae.models import MODELS

    model = MODELS[family].module((1, 16, 16), latent_dim=4, width=4).train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    outputs = []
    if hasattr(model, "reconstruct"):
        outputs.append(model.reconstruct(images))
    if hasattr(model, "sample"):
        drawn = model.sample(1, torch.Generator().manual_seed(0))  # one alone: batch norm in eval mode
        assert drawn.shape == (1, 1, 16, 16)
        outputs.append(model.sample(3, torch.Generator().manual_seed(0)))
        # Each image is its own: the first of three is the one drawn alone.
        torch.testing.assert_close(outputs[-1][:1], drawn)
    assert outputs and model.training, "the model's mode is restored"
    assert all(not output.requires_grad for output in outputs)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items()), (
        "batch-norm statistics untouched"
    )
    model.eval()
    again = (
        model.reconstruct(images)
        if hasattr(model, "reconstruct")
        else model.sample(3, torch.Generator().manual_seed(0))
    )
    torch.testing.assert_close(again, outputs[0])
    assert not model.training


def test_load_model_rebuilds_a_runs_family_and_refuses_a_folder(tmp_path):
    from lightning_genae.experiment.cli import main
    from lightning_genae.models.aae import AAEModule

    run = tmp_path / "run"
    args = ["--model", "aae", "--max-steps", "2", "--width", "4", "--latent-dim", "4", "--backbone", "none"]
    assert main([*args, "--output", str(run)]) == 0
    model = lightning_genae.load_model(run / "checkpoints" / "last.ckpt")
    assert type(model) is AAEModule and not model.training and model.latent_dim == 4
    with pytest.raises(ConfigError, match=r"^load_model: no checkpoint file at "):
        lightning_genae.load_model(run)
    assert type(AAEModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")) is AAEModule


def test_callbacks_for_refuses_a_trainer_writing_elsewhere_in_one_line(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    from lightning_genae.datamodules import build_datamodule

    monkeypatch.chdir(tmp_path)
    data = build_datamodule("digits", batch_size=16)
    model = GANModule((1, 16, 16), latent_dim=4, width=4)
    callbacks = lightning_genae.callbacks_for(model, data, "my_run", metrics=False)
    trainer = pl.Trainer(**lightning_genae.trainer_kwargs(model, 1), callbacks=callbacks, logger=False)
    with pytest.raises(ConfigError, match=r"give pl.Trainer\(default_root_dir='my_run'\)"):
        trainer.fit(model, datamodule=data)
    assert not (tmp_path / "images").exists()


def test_score_images_measures_a_models_samples_and_the_data_against_itself(tmp_path):
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.metrics.distances import frechet_distance
    from lightning_genae.metrics.generative import extract_features

    data = build_datamodule("digits", data_dir=tmp_path)
    data.setup("test")
    real, _ = data.split_tensors("test")
    model = GANModule((1, 16, 16), latent_dim=4, width=4)
    untrained = lightning_genae.score_images(model.sample(200, torch.Generator().manual_seed(0)), data)
    itself = lightning_genae.score_images(real, data, split="test", num_samples=200)
    assert itself.n_real == itself.n_fake == 200 and untrained.n_fake == 200
    assert set(untrained.values) >= {"fd_classifier", "kid_classifier", "precision_classifier"}
    assert itself.values["fd_classifier"] < 0.5 * untrained.values["fd_classifier"]
    # The same FD as the backbone's features and the distance give by hand, on the same subsets.
    from lightning_genae.metrics.backbones import load_backbone
    from lightning_genae.metrics.generative import seeded_subset
    from lightning_genae.seeding import int_seed

    backbone = load_backbone("classifier", "digits", data)
    given = seeded_subset(len(real), 200, int_seed(0, "scored images"))
    fake = extract_features(backbone, real[given], torch.device("cpu"))
    real_features = extract_features(backbone, real, torch.device("cpu"))[seeded_subset(len(real), 200, 0)]
    assert itself.values["fd_classifier"] == pytest.approx(frechet_distance(real_features, fake), rel=1e-5)


def test_a_mistyped_family_option_is_refused_with_the_option_it_resembles():
    from lightning_genae.models.vae import VAEModule

    with pytest.raises(OptionError, match=r"\(did you mean 'latent_dim'\?\)$") as refused:
        VAEModule((1, 16, 16), latnet_dim=4)
    assert refused.value.option == "latnet_dim"


def _vae(**options):
    return lightning_genae.models.VAEModule((1, 16, 16), **options)


def _datamodule(name, **options):
    from lightning_genae.datamodules import build_datamodule

    return lambda **given: build_datamodule(name, data_dir=".", **options, **given)


def _augmentation(name):
    from lightning_genae.augmentation import AUGMENTATIONS

    return lambda **given: AUGMENTATIONS[name].options.parse(given)


# (the Python call, a bad value of one option, the command line's arguments that give the same value)
OPTION_REFUSALS = {
    "range": (_vae, {"latent_dim": 0}, ["--model", "vae", "--latent-dim", "0"]),
    "finite": (_vae, {"lr": float("inf")}, ["--model", "vae", "--lr", "inf"]),
    "choice": (_vae, {"recon_loss": "l1"}, ["--model", "vae", "--config", "{config}"]),
    "type": (_vae, {"beta": "x"}, ["--model", "vae", "--config", "{config}"]),
    "dataset": (_datamodule("folder"), {"image_size": 0}, ["--data", "folder", "--image-size", "0"]),
    "augmentation": (_augmentation("ae"), {"augment_p": 1.5}, ["--augment", "ae", "--augment-p", "1.5"]),
    "operations": (
        _augmentation("ada"),
        {"ada_ops": "translation,spin"},
        ["--augment", "ada", "--ada-ops", "translation,spin"],
    ),
}


@pytest.mark.parametrize(("build", "bad", "arguments"), OPTION_REFUSALS.values(), ids=list(OPTION_REFUSALS))
def test_a_bad_option_value_names_the_keyword_in_python_and_the_flag_on_the_command_line(
    build, bad, arguments, tmp_path, capsys
):
    import yaml

    from lightning_genae.experiment import cli
    from lightning_genae.plugin_options import flag

    [name] = bad
    with pytest.raises(OptionError) as refused:
        build(**bad)
    assert refused.value.option == name and str(refused.value).startswith(f"{name} ")
    assert "--" not in str(refused.value)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(bad))
    assert cli.main([argument.format(config=config) for argument in arguments] + ["--print-config"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and flag(name) in error, error


def test_evaluation_mode_restores_each_submodules_own_mode_and_shapes_are_plain_ints():
    import numpy as np

    from lightning_genae.models import MODELS

    model = MODELS["vae"].module(tuple(np.array([1, 16, 16])), latent_dim=4, width=4).train()
    assert all(type(d) is int for d in model.hparams["image_shape"]), "weights_only reads plain ints back"
    frozen = next(part for part in model.modules() if isinstance(part, torch.nn.BatchNorm2d)).eval()
    model.sample(2)
    assert model.training and not frozen.training, "a submodule the user froze stays frozen"


def test_load_from_checkpoint_stays_a_class_method_as_lightnings_is(tmp_path):
    model = GANModule((1, 16, 16), latent_dim=4, width=4)
    with pytest.raises(TypeError, match="cannot be called on an instance"):
        model.load_from_checkpoint(tmp_path / "any.ckpt")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        lightning_genae.no_such_name  # noqa: B018
    assert "lightning_genae" in sys.modules


@pytest.fixture()
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, with no network to wait for, its settings and caches under tmp_path, and no run left
    open: a later WandbLogger in the process would log into that run, in another folder."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    # A wandb started earlier in the process keeps that start's settings, and its service writes relative
    # paths under the folder it started in: each test starts its own.
    wandb.teardown()
    yield
    wandb.finish()


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    blocks, inside, current = [], False, []
    for line in markdown.splitlines():
        if not inside and line.strip() == "```python":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


@pytest.mark.quick
@pytest.mark.parametrize("page", ["docs/python-api.md", "README.md"])
def test_the_python_snippets_run_as_written(page, tmp_path, monkeypatch, offline_wandb):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / page
    blocks = python_blocks(path.read_text())
    assert blocks, f"{page} has no python block"
    monkeypatch.chdir(tmp_path)  # a snippet's files (Lightning's checkpoints) stay out of the checkout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for block in blocks:
            exec(compile(block, str(path), "exec"), {})
    # The periodic checkpoint's saves of an adversarial family are after the updates on purpose.
    assert not [w for w in caught if "manual optimization and every_n_train_steps" in str(w.message)]


@pytest.mark.parametrize(
    ("batch", "fix"),
    [
        ((torch.zeros(2, 3, 8, 8), torch.zeros(2)), "build the model with the data's shape"),
        ((torch.full((2, 1, 8, 8), 255, dtype=torch.uint8), torch.zeros(2)), "x / 127.5 - 1 for [0, 255]"),
        ((torch.full((2, 1, 8, 8), 255.0), torch.zeros(2)), "x / 127.5 - 1 for [0, 255]"),
        (
            (torch.zeros(2, 1, 8, 8).index_fill_(0, torch.tensor([1]), float("nan")), torch.zeros(2)),
            "holds 64 NaN or infinite values of 128",
        ),
    ],
)
def test_a_batch_breaking_the_contract_gets_one_line_naming_the_fix(batch, fix):
    from lightning_genae.errors import DataError
    from lightning_genae.models.batch import check_data

    with pytest.raises(DataError) as caught:
        check_data(batch[0], "image", (1, 8, 8))
    assert fix in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("family", "shape", "data"),
    [("vae", (1, 28, 28), "digits"), ("rae", (24, 1), "digits"), ("vae", (1, 16, 16), "sines")],
)
def test_a_model_built_for_other_data_stops_a_default_trainer_in_one_line(family, shape, data, tmp_path):
    """A default Trainer runs its sanity check's validation batches before the first training batch: the
    first of those is checked too, before a layer fails on it with PyTorch's own error."""
    import pytorch_lightning as pl

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.errors import DataError
    from lightning_genae.models import MODELS

    size = {"rnn_hidden": 4} if family == "rae" else {"width": 4}
    model = MODELS[family].module(shape, latent_dim=4, **size)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(DataError, match="does not match the model's") as caught:
        trainer.fit(model, datamodule=build_datamodule(data, batch_size=8, data_dir=tmp_path))
    assert "\n" not in str(caught.value)
    with pytest.raises(DataError, match="does not match the model's"):
        trainer.test(model, datamodule=build_datamodule(data, batch_size=8, data_dir=tmp_path))


@pytest.mark.parametrize("family", ["ae", "aae"])
def test_a_module_validated_before_it_is_fitted_trains(family, tmp_path):
    # trainer.validate runs in inference mode: metric states it leaves cannot be updated in place by the
    # fit's validations ("Inplace update to inference tensor outside InferenceMode") unless made anew.
    import pytorch_lightning as pl

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models import MODELS

    data = build_datamodule("digits", batch_size=16)
    model = MODELS[family].module((1, 16, 16), latent_dim=4, width=4)

    def trainer() -> pl.Trainer:
        return pl.Trainer(
            **lightning_genae.trainer_kwargs(model, iterations=4, eval_every=2), accelerator="cpu",
            logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
            limit_val_batches=2,
        )  # fmt: skip

    trainer().validate(model, datamodule=data)
    trainer().fit(model, datamodule=data)
    assert model.iteration == 4


def test_data_in_zero_one_is_warned_about_once_whatever_the_loops():
    from lightning_genae.models import MODELS

    model = MODELS["vae"].module(image_shape=(1, 8, 8), latent_dim=4, width=4)
    batch = (torch.rand(2, 1, 8, 8), torch.zeros(2))
    with pytest.warns(UserWarning, match="looks like") as caught:
        model.on_validation_batch_start(batch, 0)
        model.on_train_batch_start(batch, 0)
        model.on_test_batch_start(batch, 0)
    assert len([w for w in caught if "looks like" in str(w.message)]) == 1


def test_a_batch_in_zero_one_is_warned_about():
    from lightning_genae.models.batch import check_data

    with pytest.warns(UserWarning, match="looks like \\[0, 1\\]"):
        check_data(torch.rand(2, 1, 8, 8), "image", (1, 8, 8))


def test_callbacks_for_names_the_family_and_keeps_only_what_can_act(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_genae.api import family_name
    from lightning_genae.callbacks.images import ReconstructionGrid, SampleGrid
    from lightning_genae.callbacks.metrics import GenerativeMetrics
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models import MODELS

    data = build_datamodule("digits", data_dir=tmp_path)
    for name, spec in MODELS.items():
        if spec.data_kind == "image":
            assert family_name(spec.module((1, 16, 16), latent_dim=4, width=4)) == name
    gan = MODELS["gan"].module((1, 16, 16), latent_dim=4, width=4)
    kinds = [type(c) for c in lightning_genae.callbacks_for(gan, data, tmp_path, metrics=True)]
    assert SampleGrid in kinds and GenerativeMetrics in kinds and ReconstructionGrid not in kinds
    assert gan.monitor == "val/fd_classifier", "the best checkpoint follows the headline metric"
    assert sum(issubclass(kind, ModelCheckpoint) for kind in kinds) == 2  # last.ckpt and best.ckpt
    plain = [type(c) for c in lightning_genae.callbacks_for(gan, data, tmp_path, metrics=False)]
    assert GenerativeMetrics not in plain


SPLITS = ("train", "val", "test")


@pytest.mark.parametrize(
    ("splits", "fact"),
    [
        ({s: (torch.zeros(4, 1, 8, 8), torch.zeros(4)) for s in SPLITS}, "images torch.float32"),
        ({s: (torch.zeros(4, 8, 8, dtype=torch.uint8), torch.zeros(4)) for s in SPLITS}, "[N, C, H, W]"),
        ({s: (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(3)) for s in SPLITS}, "labels"),
        ({s: (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, -5, 1])) for s in SPLITS},
         "labels"),
        ({s: (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 0.5, 1, 1])) for s in SPLITS},
         "labels"),
        ({s: (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, torch.nan])) for s in SPLITS},
         "labels"),
    ],
)  # fmt: skip
def test_tensor_datamodule_refuses_what_it_cannot_store_in_one_line(splits, fact):
    from lightning_genae.datamodules import TensorImageDataModule
    from lightning_genae.errors import DataError

    with pytest.raises(DataError) as error:
        TensorImageDataModule(splits)
    message = str(error.value)
    assert "my_images train:" in message and fact in message and "\n" not in message


@pytest.mark.parametrize("batch_size", [0, 2.5, True])
def test_tensor_datamodule_refuses_a_batch_size_that_is_no_count(batch_size):
    # A fraction or a flag would pass the DataLoader on the device and cut the batches otherwise.
    from lightning_genae.datamodules import TensorImageDataModule

    splits = {s: (torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.zeros(8)) for s in SPLITS}
    with pytest.raises(OptionError) as refused:
        TensorImageDataModule(splits, batch_size=batch_size)
    assert refused.value.option == "batch_size"


def test_tensor_datamodule_serves_its_splits_with_their_shape_and_classes():
    from lightning_genae.datamodules import TensorImageDataModule

    images = torch.arange(6 * 16, dtype=torch.uint8).view(6, 1, 4, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    data = TensorImageDataModule({s: (images, labels) for s in SPLITS}, name="mine")
    assert data.image_shape == (1, 4, 4) and data.num_classes == 3 and data.name == "mine"
    stored, stored_labels = data.split_tensors("val")
    assert torch.equal(stored, images) and torch.equal(stored_labels, labels)


def test_a_stop_signal_in_a_python_run_names_the_trainer_resume_that_works(tmp_path, monkeypatch):
    """run.py cannot rebuild a run made in Python (its model options and data are the caller's), so the stop
    line names the Trainer's resume; that resume continues from last.ckpt to the budget."""
    import os
    import signal

    import pytorch_lightning as pl
    from pytorch_lightning import Callback

    import lightning_genae
    from lightning_genae import RunInterrupted
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models import MODELS

    monkeypatch.chdir(tmp_path)

    class TermAtThree(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if pl_module.iteration == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    def fit(extra, ckpt_path=None):
        data = build_datamodule("digits", batch_size=32)
        model = MODELS["gan"].module(image_shape=(1, 16, 16), latent_dim=8, width=4)
        callbacks = lightning_genae.callbacks_for(model, data, "run", checkpoint_every=100, metrics=False)
        trainer = pl.Trainer(
            **lightning_genae.trainer_kwargs(model, iterations=6, eval_every=100),
            callbacks=[*callbacks, *extra],
            default_root_dir="run",
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
        )
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model

    with pytest.raises(RunInterrupted) as stopped:
        fit([TermAtThree()])
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    advice = str(stopped.value).split("continue with: ")[1]
    last = str((tmp_path / "run" / "checkpoints" / "last.ckpt").resolve())
    assert advice.startswith(f"trainer.fit(model, datamodule=..., ckpt_path={last!r})"), advice
    assert fit([], ckpt_path=last).iteration == 6


def test_score_images_refuses_a_backbone_under_a_name_its_metrics_cannot_carry_before_any_feature():
    import lightning_genae
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.metrics.backbones import FeatureBackbone

    class Flat(FeatureBackbone):
        def __init__(self) -> None:
            super().__init__("flat", 256, "flattened pixels")
            self.calls = 0

        def extract(self, images: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return images.float().flatten(1)

    flat, data = Flat(), build_datamodule("digits")
    with pytest.raises(ValueError, match="named classifier or inception"):
        lightning_genae.score_images(torch.zeros(40, 1, 16, 16, dtype=torch.uint8), data, backbone=flat)
    assert flat.calls == 0


def test_a_python_run_whose_folder_went_names_the_trainer_resume(tmp_path):
    import lightning_genae
    from lightning_genae.callbacks.training import RunFolderPresence
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.errors import RunFolderGone
    from lightning_genae.models import MODELS

    model = MODELS["gan"].module(image_shape=(1, 16, 16), latent_dim=8, width=4)
    data = build_datamodule("digits")
    callbacks = lightning_genae.callbacks_for(model, data, tmp_path / "run", metrics=False)
    (presence,) = [callback for callback in callbacks if isinstance(callback, RunFolderPresence)]
    presence.setup(None, model, "fit")
    (tmp_path / "run").rmdir()
    with pytest.raises(RunFolderGone, match=r"put it back and continue with trainer.fit\(model, datamodule"):
        presence.setup(None, model, "validate")


def test_an_evaluation_alone_with_callbacks_for_makes_its_folder(tmp_path):
    # Before any training the folder is not gone, only not made yet.
    import lightning_genae
    from lightning_genae.callbacks.training import RunFolderPresence
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models import MODELS

    model = MODELS["gan"].module(image_shape=(1, 16, 16), latent_dim=8, width=4)
    callbacks = lightning_genae.callbacks_for(
        model, build_datamodule("digits"), tmp_path / "e", metrics=False
    )
    (presence,) = [callback for callback in callbacks if isinstance(callback, RunFolderPresence)]
    presence.setup(None, model, "validate")
    assert (tmp_path / "e").is_dir()


def test_callbacks_for_refuses_to_train_over_files_in_its_folder_and_continues_a_run_there(
    tmp_path, monkeypatch
):
    import pytorch_lightning as pl

    import lightning_genae
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.models import MODELS

    monkeypatch.chdir(tmp_path)

    def fit(ckpt_path=None):
        data = build_datamodule("digits", batch_size=32)
        model = MODELS["gan"].module(image_shape=(1, 16, 16), latent_dim=8, width=4)
        callbacks = lightning_genae.callbacks_for(model, data, "run", checkpoint_every=2, metrics=False)
        kwargs = lightning_genae.trainer_kwargs(model, iterations=4 if ckpt_path else 2, eval_every=100)
        trainer = pl.Trainer(
            **kwargs, callbacks=callbacks, default_root_dir="run", accelerator="cpu", logger=False,
            enable_progress_bar=False,
        )  # fmt: skip
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    mine = tmp_path / "run" / "checkpoints" / "last.ckpt"
    mine.write_text("my own file")
    with pytest.raises(
        RunFolderRefused, match=r"run already holds checkpoints/last.ckpt, which this training"
    ):
        fit()
    assert mine.read_text() == "my own file" and not (tmp_path / "run" / "images").exists()
    mine.unlink()
    fit()
    # The files there are this run's own: continued from its checkpoint, it may write over them.
    assert fit(ckpt_path=str(mine)).iteration == 4
    with pytest.raises(RunFolderRefused, match="which this training would write over"):
        fit()


def test_score_images_against_a_split_too_small_to_score_is_one_line(tmp_path):
    import lightning_genae
    from lightning_genae.datamodules import TensorImageDataModule
    from lightning_genae.errors import DataError

    splits = {
        "train": (torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8), torch.zeros(40)),
        "val": (torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8), torch.zeros(10)),
        "test": (torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8), torch.zeros(3)),
    }
    data = TensorImageDataModule(splits, name="tiny")
    with pytest.raises(DataError, match="the test split of tiny, which holds 3 images"):
        lightning_genae.score_images(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), data, backbone="none")


def test_an_unknown_name_in_a_registry_is_one_line_naming_the_choices_and_still_a_key_error():
    from lightning_genae.augmentation import AUGMENTATIONS
    from lightning_genae.datamodules import DATASETS
    from lightning_genae.errors import ConfigError
    from lightning_genae.models import MODELS

    for registry, typo, meant in (
        (MODELS, "vea", "vae"),
        (DATASETS, "mnsit", "mnist"),
        (AUGMENTATIONS, "difaug", "diffaug"),
    ):
        with pytest.raises(ConfigError) as caught:
            registry[typo]
        message = str(caught.value)
        assert f"'{typo}' is unknown (did you mean '{meant}'?)" in message and "\n" not in message
        assert isinstance(caught.value, KeyError)
    assert MODELS.get("vea") is None and "vea" not in MODELS


def test_build_datamodule_leaves_an_unknown_argument_to_python_and_refuses_another_datasets_option():
    from lightning_genae.datamodules import build_datamodule

    with pytest.raises(TypeError, match="batch_sise"):
        build_datamodule("digits", batch_sise=64)
    with pytest.raises(ConfigError, match="^seq_len "):
        build_datamodule("digits", seq_len=12)
    assert build_datamodule("sines", seq_len=12, batch_size=4).batch_size == 4


def test_print_of_a_datamodule_summarises_it_without_loading(tmp_path):
    from lightning_genae.datamodules import build_datamodule

    data = build_datamodule("digits", data_dir=tmp_path)
    assert str(data) == "DigitsDataModule(digits, 1x16x16, not set up)"
    data.setup("fit")
    assert str(data).startswith("DigitsDataModule(digits: train ")


@pytest.mark.parametrize(
    "package", ["lightning_genae", "lightning_genae.models", "lightning_genae.datamodules"]
)
def test_every_lazily_exported_name_is_typed_and_listed_by_dir(package):
    """Type checkers do not run a module's __getattr__: each lazy name is imported for them under
    `if TYPE_CHECKING:`, from the module it is served from; dir() (help, completion) lists them all."""
    import ast
    import importlib
    import inspect

    module = importlib.import_module(package)
    typed: dict[str, str] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    typed.update(
                        {alias.name: statement.module.rpartition(".")[2] for alias in statement.names}
                    )
    exports = module._LAZY_EXPORTS
    assert {name: typed.get(name) for name in exports} == dict(exports)
    assert set(exports) <= set(dir(module))


def test_what_reconstruct_cannot_take_is_one_line_naming_the_fix():
    from lightning_genae.errors import DataError
    from lightning_genae.models import MODELS

    vae = MODELS["vae"].module(image_shape=(1, 16, 16), latent_dim=4, width=4)
    rae = MODELS["rae"].module(series_shape=(24, 1), latent_dim=4, rnn_hidden=4)
    refusals = [
        (
            lambda: vae.reconstruct(torch.zeros(2, 1, 28, 28)),
            DataError,
            "input of shape [2, 1, 28, 28] does not",
        ),
        (lambda: vae.reconstruct(torch.zeros(2, 1, 16, 16) + 9), DataError, "spans [9, 9], outside [-1, 1]"),
        (lambda: rae.reconstruct(series=torch.zeros(2, 12, 1)), DataError, "[N, T, C] = [N, 24, 1]"),
    ]
    for call, error, fix in refusals:
        with pytest.raises(error) as caught:
            call()
        assert fix in str(caught.value) and "\n" not in str(caught.value)
    assert vae.sample(0).shape == (0, 1, 16, 16)
    assert rae.reconstruct(torch.zeros(2, 24, 1)).shape == (2, 24, 1)


@pytest.mark.parametrize("family", ["ae", "vae", "gan", "began", "vaegan", "aae"])
def test_a_second_fit_after_one_that_raised_starts_with_no_training_values_of_the_first(family):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_genae.models import MODELS

    images = torch.rand(64, 1, 16, 16) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.zeros(64, dtype=torch.long)), batch_size=16)
    model = MODELS[family].module((1, 16, 16), latent_dim=4, width=4)
    queued_at_start = []

    class Fails(pl.Callback):
        def on_train_batch_end(self, *args) -> None:
            raise RuntimeError("stopped by the test")

    class Looks(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            queued_at_start.append((len(module._training_values), module.last_logged_training))

    quiet = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False}
    quiet |= {"enable_progress_bar": False, "enable_model_summary": False}
    with pytest.raises(RuntimeError, match="stopped by the test"):
        pl.Trainer(max_steps=4, callbacks=[Fails()], **quiet).fit(model, loader)
    pl.Trainer(max_steps=2, callbacks=[Looks()], **quiet).fit(model, loader)
    assert queued_at_start[0] == (0, None)


def test_a_value_of_the_wrong_type_names_the_argument_it_was_given_as():
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models.vae import VAEModule

    with pytest.raises(OptionError) as refused:
        build_datamodule("digits", batch_size="x")
    assert refused.value.option == "batch_size"
    with pytest.raises(OptionError) as refused:
        VAEModule((1, 16, 16), latent_dim=True)
    assert refused.value.option == "latent_dim"


def test_callbacks_for_refuses_to_continue_another_folders_run_over_the_run_there(tmp_path):
    """trainer.fit(..., ckpt_path=...) of run B's checkpoint with run A's folder as output_dir would write
    B's continuation over A's checkpoints and grids: refused before the first batch, A untouched. The
    checkpoint continued into an empty folder, or into its own, trains."""
    import pytorch_lightning as pl

    import lightning_genae
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.models import MODELS

    def fit(folder, iterations, ckpt_path=None):
        data = build_datamodule("digits", batch_size=32)
        model = MODELS["gan"].module(image_shape=(1, 16, 16), latent_dim=8, width=4)
        callbacks = lightning_genae.callbacks_for(model, data, folder, checkpoint_every=100, metrics=False)
        trainer = pl.Trainer(
            **lightning_genae.trainer_kwargs(model, iterations=iterations, eval_every=100),
            callbacks=callbacks,
            default_root_dir=folder,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
        )
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model

    run_a, run_b = tmp_path / "a", tmp_path / "b"
    fit(run_a, 2)
    fit(run_b, 3)
    before = {path: path.read_bytes() for path in run_a.rglob("*") if path.is_file()}
    b_last = str(run_b / "checkpoints" / "last.ckpt")
    with pytest.raises(RunFolderRefused, match=r"holds another run .* than the checkpoint's") as refused:
        fit(run_a, 4, ckpt_path=b_last)
    assert len(str(refused.value).splitlines()) == 1 and f"output_dir={str(run_b)!r}" in str(refused.value)
    assert {path: path.read_bytes() for path in run_a.rglob("*") if path.is_file()} == before
    assert fit(tmp_path / "c", 4, ckpt_path=b_last).iteration == 4
    assert fit(run_b, 4, ckpt_path=b_last).iteration == 4
    # A checkpoint kept anywhere in the run's folder (a plain ModelCheckpoint's subfolder) is its run's.
    kept = run_b / "lightning_checkpoints" / "step4.ckpt"
    kept.parent.mkdir()
    kept.write_bytes((run_b / "checkpoints" / "last.ckpt").read_bytes())
    assert fit(run_b, 5, ckpt_path=str(kept)).iteration == 5


@pytest.mark.parametrize("logger", ["wandb", "tensorboard", "csv"])
def test_a_logger_of_the_trainers_writing_into_the_run_folder_is_the_runs_own(
    logger, tmp_path, offline_wandb
):
    """A Trainer's loggers start their run in the folder before the first batch (W&B's wandb/, TensorBoard's
    event file): the training goes on. A later training with the same callbacks would write over the run
    there: refused."""
    import pytorch_lightning as pl
    import wandb
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.models import MODELS

    folder = tmp_path / "run"
    data = build_datamodule("digits", batch_size=32)
    model = MODELS["gan"].module(image_shape=(1, 16, 16), latent_dim=8, width=4)
    callbacks = lightning_genae.callbacks_for(model, data, folder, checkpoint_every=2, metrics=False)
    loggers = {
        "wandb": lambda: WandbLogger(save_dir=folder, mode="offline"),
        "tensorboard": lambda: TensorBoardLogger(folder, name="tensorboard", version=""),  # as run.py's
        "csv": lambda: CSVLogger(folder),
    }

    def fit():
        trainer = pl.Trainer(
            **lightning_genae.trainer_kwargs(model, iterations=2, eval_every=100), callbacks=callbacks,
            default_root_dir=folder, accelerator="cpu", logger=loggers[logger](), enable_progress_bar=False,
        )  # fmt: skip
        try:
            trainer.fit(model, datamodule=data)
        finally:
            wandb.finish()

    fit()
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(RunFolderRefused, match="already holds checkpoints/last.ckpt"):
        fit()


@pytest.mark.parametrize(
    ("build", "option"),
    [({"batch_size": 4000}, "batch_size"), ({"train_size": 100000}, "train_size"), ("tensors", "batch_size")],
    ids=["batch_size", "train_size", "TensorImageDataModule"],
)
def test_a_fits_data_checks_name_the_argument_as_python_spells_it(build, option):
    """The checks that run in Lightning's fit (the data's set-up, its loader) name `batch_size`, not
    run.py's `--batch-size`."""
    import pytorch_lightning as pl

    from lightning_genae.datamodules import TensorImageDataModule, build_datamodule
    from lightning_genae.models import MODELS

    if build == "tensors":
        splits = {s: (torch.zeros(8, 1, 16, 16, dtype=torch.uint8), torch.zeros(8)) for s in SPLITS}
        data = TensorImageDataModule(splits, batch_size=32)
    else:
        data = build_datamodule("digits", **build)
    model = MODELS["ae"].module(image_shape=(1, 16, 16), latent_dim=4, width=4)
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    with pytest.raises(OptionError) as refused:
        trainer.fit(model, datamodule=data)
    assert refused.value.option == option and "--" not in str(refused.value), str(refused.value)


def test_a_models_checks_in_a_fit_name_its_options_as_python_spells_them():
    """The model's own checks that run in Lightning's fit (its hooks, long after the constructor) name
    `aae_components`, not run.py's `--aae-components`."""
    import pytorch_lightning as pl

    from lightning_genae.datamodules import TensorImageDataModule
    from lightning_genae.errors import ConfigError
    from lightning_genae.models import AAEModule

    labels = torch.arange(16) % 12
    splits = {s: (torch.zeros(16, 1, 16, 16, dtype=torch.uint8), labels) for s in SPLITS}
    data = TensorImageDataModule(splits, batch_size=8)
    model = AAEModule(
        (1, 16, 16), aae_supervised=True, aae_prior="mixture", aae_components=10, latent_dim=8, width=4
    )
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    with pytest.raises(ConfigError) as refused:
        trainer.fit(model, datamodule=data)
    message = str(refused.value)
    assert "aae_components 12 or more" in message and "--" not in message, message


def test_callbacks_for_trains_a_series_model_into_a_new_folder_and_continues_it(tmp_path):
    """The normaliser a series run writes beside its checkpoints is its own file, not another run's."""
    import pytorch_lightning as pl

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.models import RAEModule

    def fit(ckpt_path=None):
        data = build_datamodule("sines", batch_size=16)
        data.prepare_data()
        data.setup("fit")
        model = RAEModule(series_shape=tuple(data.data_shape), latent_dim=4, rnn_hidden=8)
        callbacks = lightning_genae.callbacks_for(model, data, tmp_path / "run", metrics=False)
        kwargs = lightning_genae.trainer_kwargs(model, iterations=4 if ckpt_path else 2, eval_every=100)
        trainer = pl.Trainer(
            **kwargs, callbacks=callbacks, default_root_dir=tmp_path / "run", accelerator="cpu",
            logger=False, enable_progress_bar=False,
        )  # fmt: skip
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model

    assert fit().iteration == 2
    assert (tmp_path / "run" / "normaliser.json").is_file()
    assert fit(ckpt_path=str(tmp_path / "run" / "checkpoints" / "last.ckpt")).iteration == 4


@pytest.mark.parametrize(
    ("returned", "says"),
    [
        (lambda images: images * float("nan"), "returned NaN or infinite values at step 2"),
        (lambda images: ((images + 1) * 127.5).to(torch.uint8), "returned a tensor of torch.uint8"),
        (lambda images: images[: len(images) // 2], "the metrics need [100, 1, 16, 16]"),
    ],
    ids=["nan", "uint8", "half"],
)
def test_samples_the_metrics_cannot_score_stop_the_evaluation_in_one_line(tmp_path, returned, says):
    """Stored as pixels, NaN became black images with a finite FD (and best.ckpt was chosen on it)."""
    import pytorch_lightning as pl

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.errors import DataError
    from lightning_genae.models import GANModule

    class BrokenSampler(GANModule):
        def sample(self, n, generator=None):
            return returned(super().sample(n, generator=generator))

    data = build_datamodule("digits", batch_size=32)
    model = BrokenSampler((1, 16, 16), latent_dim=4, width=4)
    callbacks = lightning_genae.callbacks_for(model, data, tmp_path, eval_samples=100)
    kwargs = lightning_genae.trainer_kwargs(model, iterations=2, eval_every=2)
    trainer = pl.Trainer(
        **kwargs, callbacks=callbacks, default_root_dir=tmp_path, accelerator="cpu", logger=False,
        enable_progress_bar=False,
    )  # fmt: skip
    with pytest.raises(DataError, match=r"^BrokenSampler\.sample") as refused:
        trainer.fit(model, datamodule=data)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_scoring_and_loading_leave_the_global_random_state_as_they_found_it(tmp_path):
    # Building the classifier or the model draws initial weights: a seeded script's later draws moved.
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.experiment.cli import main

    data = build_datamodule("digits", data_dir=tmp_path)
    data.setup("test")
    real, _ = data.split_tensors("test")
    run = tmp_path / "run"
    args = ["--model", "gan", "--max-steps", "1", "--width", "4", "--latent-dim", "4", "--backbone", "none"]
    assert main([*args, "--output", str(run)]) == 0
    torch.manual_seed(0)
    state = torch.get_rng_state()
    lightning_genae.score_images(real, data, num_samples=20)
    assert torch.equal(torch.get_rng_state(), state), "score_images moved the global random state"
    lightning_genae.load_model(run / "checkpoints" / "last.ckpt")
    assert torch.equal(torch.get_rng_state(), state), "load_model moved the global random state"


def test_score_images_refuses_floats_on_another_scale_than_minus_one_to_one(tmp_path):
    # Standardised images (about [-3, 3]) were clamped to [-1, 1] and scored as other images.
    from lightning_genae.datamodules import build_datamodule

    data = build_datamodule("digits", data_dir=tmp_path)
    data.setup("test")
    real, _ = data.split_tensors("test")
    floats = real[:40].float() / 127.5 - 1
    with pytest.raises(ValueError, match=r"of their values outside \[-1, 1\]"):
        lightning_genae.score_images(floats * 3, data)
    overshoot = floats.clone()
    overshoot[0, 0, 0, 0] = 1.2  # a decoder without tanh overshoots a little: clamped, scored
    assert lightning_genae.score_images(overshoot, data).n_fake == 40


def test_a_double_precision_model_samples_in_double_precision():
    from lightning_genae.models.began import BEGANModule
    from lightning_genae.models.vae import VAEModule

    for model in (
        GANModule((1, 16, 16), latent_dim=4, width=4),
        BEGANModule((1, 16, 16), latent_dim=4, width=4),
    ):
        assert model.double().sample(2, torch.Generator().manual_seed(0)).dtype == torch.float64
    vae = VAEModule((1, 16, 16), latent_dim=4, width=4).double()
    assert vae.sample(2).dtype == torch.float64


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        ("zero-one", "DataError", "not binary pixels read as -1 and 1"),
        ("cropped", "DataError", "does not match the model's"),
        ("mse", "ConfigError", "recon_loss='bce'"),
    ],
)
def test_the_vaes_likelihood_of_input_it_cannot_score_is_one_line_naming_the_fix(change, error, says):
    from lightning_genae.models.vae import VAEModule

    model = VAEModule((1, 16, 16), latent_dim=4, width=4, recon_loss="mse" if change == "mse" else "bce")
    images = (torch.rand(3, 1, 16, 16) > 0.5).float() * 2 - 1
    images = {
        "zero-one": (images + 1) / 2,
        "cropped": images[:, :, :8],
    }.get(change, images)
    with pytest.raises(getattr(lightning_genae, error), match=says) as raised:
        model.log_likelihood(images, 5)
    assert "\n" not in str(raised.value)


def _digits_and_real(tmp_path):
    from lightning_genae.datamodules import build_datamodule

    data = build_datamodule("digits", data_dir=tmp_path)
    data.setup("test")
    return data, data.split_tensors("test")[0]


def _nan_images() -> torch.Tensor:
    images = torch.zeros(10, 1, 16, 16)
    images[3] = float("nan")
    return images


# Each refusal of the Python API: (call on the digits data and its test images, error type, the fact named).
API_REFUSALS = [
    (lambda data, real: lightning_genae.score_images(real[:, 0], data), ValueError, "images of shape"),
    (lambda data, real: lightning_genae.score_images(_nan_images(), data), ValueError, "hold NaN or Inf"),
    (lambda data, real: lightning_genae.score_images(real[:10].float(), data), ValueError, "outside [-1, 1]"),
    (lambda data, real: lightning_genae.score_images(real[:5], data), ValueError, "need at least 6"),
    (
        lambda data, real: lightning_genae.score_images(real, data, num_samples=5),
        ValueError,
        "need at least 6",
    ),
    # numpy's SeedSequence, which draws the scored subset, refuses it.
    (lambda data, real: lightning_genae.score_images(real[:10], data, seed=-1), ValueError, "non-negative"),
    (
        lambda data, real: lightning_genae.callbacks_for(GANModule((1, 16, 16)), data, "x", eval_samples=0),
        ValueError,
        "eval_samples",
    ),
    (
        lambda data, real: lightning_genae.callbacks_for(GANModule((1, 16, 16)), data, "x", every_n_steps=0),
        ValueError,
        "every_n_steps",
    ),
]


@pytest.mark.parametrize(("call", "error", "fact"), API_REFUSALS)
def test_the_python_api_refuses_what_would_give_wrong_numbers(tmp_path, call, error, fact):
    data, real = _digits_and_real(tmp_path)
    with pytest.raises(error) as raised:
        call(data, real)
    assert fact in str(raised.value)


def test_score_images_warns_of_floats_that_lie_in_zero_one(tmp_path):
    data, _ = _digits_and_real(tmp_path)
    with pytest.warns(UserWarning, match=r"floats are read in \[-1, 1\]"):
        lightning_genae.score_images(torch.rand(10, 1, 16, 16), data)
