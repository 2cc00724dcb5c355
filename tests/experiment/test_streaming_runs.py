"""Runs that stream a prepared folder: `genae prepare` writes it, every image family trains from it with
and without augmentation, a streamed run killed part-way through an epoch resumes to the numbers of the
uninterrupted streamed run, its evaluation scores as the in-memory run's without reading val or test whole,
and two nodes each read their own share of the training split and of an offline pool they write once."""

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from litdata import StreamingDataLoader
from test_reproducibility import CopyCheckpointBeforeIteration, final_metrics, rows_after
from tiny import ON_CPU, TINY_RUN

from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.streaming import StreamedSplits
from lightning_genae.experiment import augmenter as latent_module
from lightning_genae.experiment import train as train_module
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.trainer import build_callbacks
from lightning_genae.metrics import generative
from lightning_genae.models import MODELS

REPO = Path(__file__).resolve().parents[2]
AUGMENTER = ["--augmenter-width", "8", "--augmenter-latent-dim", "8", "--augmenter-steps", "10"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """digits prepared by the command: 1258 train, 180 val, 359 test images."""
    folder = tmp_path_factory.mktemp("streaming") / "digits"
    assert main(["prepare", "--data", "digits", "--output", str(folder)]) == 0
    return folder


@pytest.fixture()
def read_whole(monkeypatch) -> set[str]:
    """The splits the streamed DataModules of the test's runs read whole into memory."""
    splits: set[str] = set()
    original = StreamedSplits.split_tensors

    def spy(self, split):
        splits.add(split)
        return original(self, split)

    monkeypatch.setattr(StreamedSplits, "split_tensors", spy)
    return splits


@pytest.fixture()
def streams(monkeypatch) -> list[bool]:
    """Whether each training loader the streamed DataModules of the test's runs made is LitData's."""
    made: list[bool] = []
    original = StreamedSplits.train_dataloader

    def spy(self, **options):
        loader = original(self, **options)
        made.append(isinstance(loader, StreamingDataLoader))
        return loader

    monkeypatch.setattr(StreamedSplits, "train_dataloader", spy)
    return made


def test_prepare_writes_nothing_into_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("")
    assert main(["prepare", "--data", "digits", "--output", str(tmp_path)]) == 2
    assert "--output" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["kept.txt"]


IMAGE_FAMILIES = [name for name, spec in MODELS.items() if spec.data_kind == "image"]
ARMS = [(family, []) for family in IMAGE_FAMILIES] + [
    ("gan", ["--augment", "ae", *AUGMENTER]),
    ("gan", ["--augment", "ae+diffaug", *AUGMENTER]),
    # The papers' nets start their output at the training split's pixel means.
    ("vae", ["--vae-nets", "paper"]),
    ("gan", ["--gan-nets", "paper"]),
]


@pytest.mark.parametrize(("family", "options"), ARMS, ids=[" ".join([f, *a[:2]]) for f, a in ARMS])
def test_every_image_family_trains_from_a_stream(
    prepared, streams, read_whole, tmp_path, monkeypatch, family, options
):
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: tmp_path / "augmenters")
    tiny = [*TINY_RUN]
    if any(option.endswith("-nets") for option in options):
        del tiny[tiny.index("--width") : tiny.index("--width") + 2]  # the papers' nets have their own sizes
    run = [
        "--model",
        family,
        *options,
        *tiny,
        "--data-dir",
        str(prepared),
        "--max-steps",
        "2",
        "--eval-samples",
        "50",
    ]
    assert main([*run, "--no-test-split", "--output", str(tmp_path / "run")]) == 0
    assert streams and all(streams)
    assert "train" not in read_whole, "the streamed training split was read into memory"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    in_memory = build_datamodule("digits")
    assert summary["data_sha256"]["train"] == in_memory.content_sha256("train"), "the same data as in memory"


def test_a_recurrent_autoencoder_trains_from_prepared_series(streams, read_whole, tmp_path):
    prepared = tmp_path / "sines"
    assert main(["prepare", "--data", "sines", "--output", str(prepared)]) == 0
    run = "--model rae --data sines --max-steps 2 --rnn-hidden 8 --latent-dim 4".split()
    assert main([*run, "--data-dir", str(prepared), "--output", str(tmp_path / "run")]) == 0
    assert streams and all(streams)
    assert "train" not in read_whole, "the streamed training split was read into memory"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_sha256"]["train"] == build_datamodule("sines").content_sha256("train")


def test_a_streamed_run_scores_val_and_test_as_the_in_memory_run_without_reading_them_whole(
    prepared, read_whole, tmp_path, monkeypatch
):
    # An autoencoder: its grids, interpolations and test probe read val and test too. A train_size of the
    # whole split is held in memory, so that both runs train on the same batches.
    run = ["--model", "vae", *TINY_RUN, *ON_CPU, "--max-steps", "3", "--eval-samples", "100"]
    run += ["--train-size", "1258"]
    for name, data in (("memory", []), ("streamed", ["--data-dir", str(prepared)])):
        # Each run its own real features, so that the streamed run reads its own from the chunks.
        monkeypatch.setattr(generative, "cache_root", lambda name=name: tmp_path / f"{name}-cache")
        assert main([*run, *data, "--output", str(tmp_path / name)]) == 0
    assert read_whole == {"train"}, "val or test was read whole"
    assert final_metrics(tmp_path / "streamed") == final_metrics(tmp_path / "memory")
    assert {"test/fd_classifier", "test/probe_acc"} <= set(final_metrics(tmp_path / "streamed"))


# 1258 digits in batches of 256: 4 iterations an epoch, so a stop at 6 is part-way through the second epoch
# and 10 iterations reach the third.
HALF, FULL = 6, 10
RESUMED_RUNS = {
    "no augmentation": [],
    "loader workers": ["--num-workers", "2"],
    "ae augmentation": ["--augment", "ae", *AUGMENTER],
    # Each source gives whole batches of its own: 3 of the split's 1258 and 1 of the pool, 4 iterations an
    # epoch, read in the training process whatever the workers.
    "offline pool": [
        *["--augment", "ae", *AUGMENTER, "--augment-mode", "offline", "--augment-pool", "400"],
        *["--batch-size", "400", "--num-workers", "2"],
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("arm", list(RESUMED_RUNS))
def test_a_streamed_run_killed_part_way_through_an_epoch_resumes_to_the_uninterrupted_run(
    prepared, streams, read_whole, tmp_path, monkeypatch, arm
):
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: tmp_path / "augmenters")
    run = ["--model", "gan", *TINY_RUN, *ON_CPU, "--data-dir", str(prepared), "--batch-size", "256"]
    run += ["--eval-samples", "100", *RESUMED_RUNS[arm]]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    # The uninterrupted run leaves a copy of last.ckpt as a run killed before iteration HALF + 1 would.
    killed = tmp_path / f"killed-at-{HALF}.ckpt"
    copier = CopyCheckpointBeforeIteration(HALF, killed)
    monkeypatch.setattr(train_module, "build_callbacks", lambda *a: [*build_callbacks(*a), copier])
    assert main([*run, "--max-steps", str(FULL), "--output", str(whole)]) == 0
    monkeypatch.setattr(train_module, "build_callbacks", build_callbacks)
    assert main(["--resume", str(killed), "--max-steps", str(FULL), "--output", str(resumed)]) == 0
    assert streams and all(streams)
    assert "train" not in read_whole, "the streamed training split was read into memory"
    assert json.loads((resumed / "summary.json").read_text())["global_step"] == FULL
    assert final_metrics(resumed) == final_metrics(whole)
    resumed_rows = rows_after(resumed, HALF)
    assert resumed_rows and resumed_rows == rows_after(whole, HALF)


# Each process records the images of every training batch it gets, as stored (uint8 bytes, hex).
RECORD_BATCHES = """
import json, os, sys
from pathlib import Path
from pytorch_lightning import Callback
import lightning_genae.experiment.train as train
from lightning_genae.datamodules.pixels import to_uint8
from lightning_genae.experiment.cli import main

class RecordBatches(Callback):
    seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen += [image.cpu().numpy().tobytes().hex() for image in to_uint8(batch[0])]

    def on_train_end(self, trainer, pl_module):
        Path(os.environ["RECORD"], f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))

build = train.build_callbacks
train.build_callbacks = lambda *args: [*build(*args), RecordBatches()]
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_nodes(run: list[str], tmp_path: Path) -> list[Counter]:
    """`run` on two nodes of one process each, started as torchrun starts them (gloo over loopback), with one
    cache between them as nodes on a shared file system have: the images of each node's training batches."""
    run = [*run, "--accelerator", "cpu", "--strategy", "ddp", "--devices", "1", "--num-nodes", "2"]
    job = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "TORCHELASTIC_RUN_ID": "two-nodes"}
    job.update(WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", RECORD=str(tmp_path))
    job.update(GENAE_CACHE_DIR=str(tmp_path / "cache"))
    base = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **job}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", RECORD_BATCHES, *run, "--output", str(tmp_path / "run")],
            cwd=tmp_path,
            env={**base, "RANK": str(node), "GROUP_RANK": str(node), "NODE_RANK": str(node)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for node in (0, 1)
    ]
    try:
        # A node that fails leaves the other waiting for it: each is waited for with a deadline.
        for node in nodes:
            _, err = node.communicate(timeout=300)
            assert node.returncode == 0, err.decode()[-3000:]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    return [Counter(json.loads((tmp_path / f"rank{rank}.json").read_text())) for rank in (0, 1)]


SHORT_RUN = ["--eval-every", "1000", "--image-every", "1000", "--ckpt-every", "1000", "--no-test-split"]
SHORT_RUN += ["--eval-samples", "50"]


@pytest.mark.slow
def test_two_nodes_read_disjoint_shares_that_together_are_the_training_split(prepared, tmp_path):
    """One epoch of 1258 digits in global batches of 34 is 37 iterations of 17 images on each node."""
    run = ["--model", "ae", *TINY_RUN, "--data-dir", str(prepared), "--batch-size", "34", "--max-steps", "37"]
    shares = two_nodes([*run, *SHORT_RUN], tmp_path)
    assert sum(shares[0].values()) == sum(shares[1].values()) == 37 * 17
    assert not shares[0] & shares[1], "no image is read by both nodes"
    split = build_datamodule("digits").split_tensors("train")[0]
    assert shares[0] + shares[1] == Counter(image.numpy().tobytes().hex() for image in split)


@pytest.mark.slow
def test_two_nodes_write_one_offline_pool_and_read_disjoint_shares_of_it(prepared, tmp_path):
    """Each node's local rank 0 writes the pool the cache lacks, and one folder stays. Per epoch, 1258 digits
    and a pool of 340 in global batches of 34: 37 iterations of the split and 10 of the pool."""
    run = ["--model", "gan", *TINY_RUN, "--data-dir", str(prepared), "--batch-size", "34"]
    run += ["--max-steps", "47", "--augment", "ae", *AUGMENTER]
    run += ["--augment-mode", "offline", "--augment-pool", "340"]
    shares = two_nodes([*run, *SHORT_RUN], tmp_path)
    assert not shares[0] & shares[1], "no image is read by both nodes"
    split = build_datamodule("digits").split_tensors("train")[0]
    split = Counter(image.numpy().tobytes().hex() for image in split)
    read = shares[0] + shares[1]
    assert read & split == split, "every training image"
    pool = read - split
    assert sum(pool.values()) == len(pool) == 340, "every pool image once, and no training image twice"
    pools = list((tmp_path / "cache" / "pools").iterdir())
    assert len(pools) == 1 and not pools[0].name.startswith("."), "one pool, no temporary folder left"
