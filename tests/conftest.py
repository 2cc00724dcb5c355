"""Shared fixtures: where the real datasets live, caches kept out of the user's, one torch thread."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def quiet_evaluation_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation passes in the suite's in-process runs say nothing, however slow the machine: a test of a
    one-line error must not depend on whether a validation took 10 s.
    tests/experiment/test_evaluation_progress.py sets the period itself to test the progress lines."""
    from lightning_genae import progress as console

    monkeypatch.setattr(console, "EVALUATION_QUIET_SECONDS", float("inf"))


@pytest.fixture(autouse=True)
def quick_series_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Series runs score with fewer and shorter post-hoc fits (tiny.quick_series_scores); a module fixture
    that trains series runs applies it itself, as this one is set up after it."""
    from tiny import quick_series_scores

    quick_series_scores(monkeypatch)


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """The folder holding MNIST/raw: $GENAE_DATA_DIR, else ../shared/data next to the repo.

    Skips when absent, except on CI (CI=true), where a silent skip would hide that the test never ran.
    """
    data_dir = Path(os.environ.get("GENAE_DATA_DIR", REPO.parent / "shared" / "data"))
    raw = data_dir / "MNIST" / "raw"
    if not any((raw / name).is_file() for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")):
        message = f"real MNIST not found at {raw} (set GENAE_DATA_DIR to the folder holding MNIST/raw)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return data_dir


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread in every test, and in every process a test starts (OMP_NUM_THREADS). The tensors are
    tiny, and the suite runs in two worker processes on two cores: a second thread per process only
    oversubscribes the cores, and a thread that waits for a descheduled sibling stalls every op. Numbers
    compared for equality must also not depend on how a reduction was split across threads."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(previous_threads)


@pytest.fixture(autouse=True)
def one_thread_after_each_test(one_thread):
    """A test of --threads sets the process's count and OMP_NUM_THREADS as a run does; the tests after it in
    the same worker, and the processes they start, compute with one thread again."""
    yield
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature and classifier caches go to a temporary folder, never the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("genae-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENAE_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_ae_run(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> Path:
    """One finished 3-iteration ae run on digits, trained once per session; read it, never write into it.

    A test that needs to change a run (resume it, damage its checkpoint) copies the folder first.
    """
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main

    run_dir = tmp_path_factory.mktemp("tiny-ae") / "run"
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "3", "--output", str(run_dir)]) == 0
    return run_dir
