"""Feature backbones for the generative metrics, the dataset's classifier or torch-fidelity's Inception: uint8
images in, float32 features out, `name` in the metric's name, `description` in every result."""

from __future__ import annotations

import hashlib
import io
import sys
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.hub import download_url_to_file

from lightning_genae.cache import cache_root, file_sha256
from lightning_genae.cluster import created_by_local_rank_zero, file_identity
from lightning_genae.datamodules import to_model_range
from lightning_genae.errors import ConfigError, GenaeError, describe_error
from lightning_genae.metrics import classifier as classifier_lib
from lightning_genae.metrics.classifier import BackboneUnavailable
from lightning_genae.metrics.names import BACKBONES

if TYPE_CHECKING:
    from lightning_genae.datamodules import ImageDataModule

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# torch-fidelity's own release, the file torchmetrics' FID downloads too (TF 2015-12-05 graph, converted).
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_DIM = 2048


def _tell(message: str) -> None:
    """A line on stderr, not through `progress`: the classifier commands answer --help without Lightning."""
    print(message, file=sys.stderr, flush=True)


class FeatureBackbone(nn.Module):
    """uint8 [N,C,H,W] -> float32 [N, feature_dim], frozen and in eval mode; subclasses `extract` a chunk."""

    # Images per internal chunk: bounds memory when a caller passes a whole split at once.
    chunk_size: int = 256

    def __init__(
        self, name: str, feature_dim: int, description: str, weights_sha256: str | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self.feature_dim = feature_dim
        self.description = description
        # The weights file's SHA-256, by which a resume compares metrics (a moved file is the same backbone).
        self.weights_sha256 = weights_sha256

    def train(self, mode: bool = True) -> FeatureBackbone:
        # A LightningModule holding this as a child calls .train(); batch norm must keep its statistics.
        return super().train(False)

    @abstractmethod
    def extract(self, images: Tensor) -> Tensor:
        """Features of a uint8 chunk on this module's device."""

    def forward(self, images: Tensor) -> Tensor:
        """Features [N, feature_dim] (float32, on this module's device) of uint8 images [N,C,H,W]."""
        # A float image is on no scale a backbone reads.
        if images.dtype != torch.uint8:
            raise ValueError(f"{self.name} backbone expects uint8 images [N,C,H,W], got {images.dtype}")
        reference = next(self.parameters(), None)
        device = reference.device if reference is not None else torch.device("cpu")
        if len(images) == 0:
            return torch.empty(0, self.feature_dim, device=device)
        chunks = []
        # Under a bf16/fp16 Trainer the caller may be inside autocast: features must not depend on that.
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            for chunk in images.split(self.chunk_size):
                chunks.append(self.extract(chunk.to(device)).float())
        return torch.cat(chunks)


class ClassifierBackbone(FeatureBackbone):
    """Penultimate (pre-ReLU, batch-normalised) features of the dataset's FeatureClassifier."""

    chunk_size = 1024

    def __init__(
        self, model: classifier_lib.FeatureClassifier, description: str, weights_sha256: str | None = None
    ) -> None:
        super().__init__("classifier", model.config.feature_dim, description, weights_sha256)
        self.model = model.requires_grad_(False).eval()
        self.image_shape = model.config.image_shape

    def extract(self, images: Tensor) -> Tensor:
        return self.model.features(to_model_range(images))


class InceptionBackbone(FeatureBackbone):
    """torch-fidelity's InceptionV3 pool features (2048) through torchmetrics, on uint8 images resized by its
    TF1 bilinear resize without antialiasing, so numbers match torch-fidelity; grayscale repeated to RGB."""

    chunk_size = 64

    def __init__(self, state_dict: dict[str, Tensor], weights_sha256: str, weights_path: str | Path) -> None:
        """`state_dict`: the weights, already read safely (`load_inception`); `weights_path` names them."""
        super().__init__(
            "inception",
            INCEPTION_DIM,
            f"inception-v3-compat (torch-fidelity weights, sha256 {weights_sha256[:8]}, no antialias)",
            weights_sha256,
        )
        # Imported here: torchmetrics' FID module pulls in torch-fidelity, which only this backbone needs.
        from torchmetrics.image.fid import NoTrainInceptionV3

        # torch-fidelity reads its weights with a full unpickler: it is handed these tensors, serialised here
        # in memory, never the user's file, so nothing it unpickles can hold code.
        serialised = io.BytesIO()
        torch.save(state_dict, serialised)
        serialised.seek(0)
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(INCEPTION_DIM)],
            feature_extractor_weights_path=serialised,
            antialias=False,
        )
        self.net.requires_grad_(False)
        self.weights_path = Path(weights_path)

    def extract(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.net(images)


def default_inception_path() -> Path:
    """Where torch.hub (and so torch-fidelity) caches the weights: $TORCH_HOME/hub/checkpoints/..."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def load_inception(path: str | Path | None = None) -> InceptionBackbone:
    """The Inception backbone with the weights at `path`, else in the torch.hub cache (downloaded there if
    absent); BackboneUnavailable rather than ever a random network."""
    weights = default_inception_path() if path is None else Path(path).expanduser()
    if path is None and not weights.is_file():
        try:
            weights.parent.mkdir(parents=True, exist_ok=True)
            _tell(f"inception: downloading {INCEPTION_URL} to {weights}")
            # torch.hub downloads to a temporary file and renames it, so a failed download leaves nothing.
            download_url_to_file(INCEPTION_URL, str(weights), progress=False)
        # Offline, a proxy, a 404 or a full disk all leave the user with the same two fixes.
        except Exception as exc:
            raise BackboneUnavailable(
                f"inception: {INCEPTION_FILE} not found in {weights.parent} nor downloadable "
                f"({describe_error(exc)}); give its path as inception_weights or put the file there"
            ) from exc
    try:
        # Read once: the bytes that are hashed are the bytes that are loaded, and only with weights_only, so
        # the file can hold tensors and plain values but never code that runs when it is read.
        data = weights.read_bytes()
        state_dict = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return InceptionBackbone(state_dict, hashlib.sha256(data).hexdigest(), weights)
    except Exception as exc:
        raise BackboneUnavailable(
            f"inception: {weights} is not a readable weights file ({describe_error(exc)}); give "
            f"{INCEPTION_FILE} (from {INCEPTION_URL}) as inception_weights"
        ) from exc


# How far a classifier's test accuracy must beat the commonest class's share for its features to be used.
CHANCE_MARGIN = 0.05


def _cached_classifier(data: str, datamodule: ImageDataModule, cache_dir: Path) -> ClassifierBackbone:
    full = datamodule
    if getattr(datamodule, "train_size", None) is not None:
        # The same dataset without a --train-size subset: the yardstick must not shrink with the run's data.
        full = type(datamodule)(**{**dict(datamodule.hparams), "train_size": None})
    seed = classifier_lib.DEFAULT_SEED
    num_train = full.split_size("train")
    epochs = classifier_lib.default_epochs(num_train)
    fingerprint = classifier_lib.training_fingerprint(full, seed=seed, epochs=epochs)
    shape = "x".join(str(d) for d in full.image_shape)
    path = cache_dir / f"{data}-{shape}-seed{seed}-{fingerprint[:16]}.pt"
    found = file_identity(path)
    loaded = None
    if found is not None:
        try:
            loaded = classifier_lib.load_checkpoint(path)
        except GenaeError:
            # The cache is this program's own: a damaged file (or one put there) is replaced, not trusted.
            _tell(f"classifier: the cached {path} is unreadable; training it again")
    if loaded is None:

        def train_and_save() -> None:
            _tell(
                f"classifier: no shipped classifier for {data}; training one on its {num_train} labelled "
                f"training images (<= {epochs} epochs, seed {seed}), cached at {path}; backbone none skips it"
            )
            model, test_accuracy = classifier_lib.train_classifier(full, seed=seed, epochs=epochs)
            test_labels = torch.cat([labels for _, labels in full.split_batches("test")])
            num_test = len(test_labels)
            labelled = test_labels[test_labels >= 0]
            commonest = float(torch.bincount(labelled).max()) / len(labelled) if len(labelled) else 0.0
            if test_accuracy < commonest + CHANCE_MARGIN:
                _tell(
                    f"classifier: warning: its test accuracy {test_accuracy:.1%} is no better than naming "
                    f"the commonest class ({commonest:.1%}); check that the labels are classes of the images"
                )
            classifier_lib.save_checkpoint(
                model,
                path,
                data=data,
                seed=seed,
                epochs=epochs,
                test_accuracy=test_accuracy,
                num_test=num_test,
                train_sha256=full.content_sha256("train"),
            )

        # Under SLURM/torchrun every rank gets here at once: local rank 0 trains, the others wait for it.
        created_by_local_rank_zero(path, train_and_save, f"{data} feature classifier", replacing=found)
        loaded = classifier_lib.load_checkpoint(path)
    model, meta = loaded
    sha256 = file_sha256(path)
    description = (
        f"classifier ({data}, trained on first use, sha256 {sha256[:8]}, "
        f"test acc {meta.get('test_accuracy', float('nan')):.2%})"
    )
    return ClassifierBackbone(model, description, sha256)


def _given_classifier(path: Path, data: str, datamodule: ImageDataModule | None) -> ClassifierBackbone:
    """A classifier checkpoint the user names (`--classifier-weights`): one the classifier command wrote,
    or a copy of one this program cached, trained on the same dataset at the run's image shape."""
    fix = (
        f"give a classifier of {data} (a file `python -m lightning_genae.experiment.classifier --data {data} "
        "--output DIR` writes, or one a run cached), or drop classifier_weights"
    )
    model, meta = classifier_lib.load_checkpoint(path, advice=fix)
    trained_on = meta.get("data")
    if trained_on != data:
        problem = f"was trained on {trained_on}, this run's data is {data}; {fix}"
    elif datamodule is not None and tuple(datamodule.image_shape) != model.config.image_shape:
        problem = (
            f"takes {model.config.image_shape} images but the run's are {tuple(datamodule.image_shape)}; "
            f"{fix} (--image-size and --channels set its shape)"
        )
    else:
        problem = None
    if problem is not None:
        raise BackboneUnavailable(f"classifier: classifier_weights {path} {problem}")
    sha256 = file_sha256(path)
    accuracy = meta.get("test_accuracy", float("nan"))
    description = f"classifier ({data}, given as {path.name}, sha256 {sha256[:8]}, test acc {accuracy:.2%}"
    # Compared without --train-size, as the classifier is trained. Not refused: one file keeps runs on data
    # that changes (a folder that grows) comparable; the note travels with every metric it measures.
    recorded = meta.get("train_sha256")
    if datamodule is not None and recorded is not None and recorded != datamodule.full_training_sha256():
        # Imported here: the classifier commands import this module and answer --help without Lightning.
        from lightning_genae.progress import warn

        description += ", trained on other training images than this run's"
        warn(f"classifier: classifier_weights {path} was not trained on this run's {data} training images")
    return ClassifierBackbone(model, description + ")", sha256)


def check_classifier_trainable(data: str, datamodule: ImageDataModule) -> None:
    """BackboneUnavailable where `datamodule`'s images have no labels to train on (read from its metadata)."""
    classes = datamodule.num_classes
    if classes is None or classes < 2:
        what = "no labels" if classes is None else "labels of one class only"
        raise BackboneUnavailable(
            f"classifier: {data} has {what} to train a feature classifier on; "
            f"{datamodule.labelling_advice()}use backbone inception with inception_weights PATH"
        )


def load_backbone(
    name: str,
    data: str,
    datamodule: ImageDataModule | None = None,
    *,
    inception_weights: str | Path | None = None,
    classifier_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> FeatureBackbone:
    """The feature backbone `name` for dataset `data`, on the CPU in eval mode (the classifier in
    `classifier_weights`, else the shipped one, else one trained and cached); never a random network."""
    if name == "inception":
        return load_inception(inception_weights)
    if name != "classifier":
        # A metric's name carries its backbone: another name must not be scored by one of these.
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if classifier_weights is not None:
        return _given_classifier(Path(classifier_weights).expanduser(), data, datamodule)
    shipped = classifier_lib.load_shipped(data, "classifier")
    if shipped is not None:
        return ClassifierBackbone(*shipped)
    if datamodule is None:
        raise BackboneUnavailable(
            f"classifier: no shipped classifier for {data}; pass its datamodule to train one"
        )
    check_classifier_trainable(data, datamodule)
    return _cached_classifier(
        data, datamodule, Path(cache_dir).expanduser() if cache_dir else cache_root() / "classifiers"
    )
