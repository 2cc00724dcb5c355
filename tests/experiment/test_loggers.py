"""Loggers: W&B never hangs offline, images reach every logger, CSV history survives a resume."""

import ast
import base64
import contextlib
import csv
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wandb
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

import lightning_genae.experiment.loggers
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.loggers import (
    RunFolderCSVLogger,
    build_loggers,
    finish_loggers,
    wandb_offline_reason,
)
from lightning_genae.experiment.resolve import resolve

REPO = Path(__file__).resolve().parents[2]

SMALL = ["--data", "digits", "--width", "8", "--latent-dim", "8", "--batch-size", "32", "--image-every", "2"]


@pytest.fixture()
def no_wandb_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc with a W&B entry
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))


def test_no_api_key_means_offline(no_wandb_credentials):
    assert "no W&B API key" in wandb_offline_reason()


def test_unreachable_network_means_offline(no_wandb_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    # Nothing listens on port 9 (discard) of this machine.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert "127.0.0.1:9 is unreachable" in wandb_offline_reason()


VIEWER = b'{"data": {"viewer": {"id": "u"}}}'


@contextlib.contextmanager
def wandb_server(
    status: int | None, body: bytes = b'{"data": {"viewer": {"id": "u"}}}', trickle: bool = False
):
    """A local stand-in for W&B's API answering every request with `status` and `body` (status None: never
    answering; `trickle`: the body a byte at a time, slower than any deadline)."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, self.headers.get("Authorization")))
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if status is None:
                time.sleep(3)
                return
            self.send_response(status)
            self.end_headers()
            for index in range(len(body)) if trickle else ():
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"" if trickle else body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


CHECK = "check WANDB_API_KEY (or `wandb login`) and WANDB_BASE_URL"
NOT_THE_API = f"does not answer as W&B's API for the key ({CHECK})"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"status": 200}, None),
        ({"status": 401}, f"answered W&B's API with HTTP 401 ({CHECK})"),
        ({"status": 404}, f"answered W&B's API with HTTP 404 ({CHECK})"),
        ({"status": None}, "did not answer within 0.5 s"),
        ({"status": 200, "trickle": True}, "did not answer within 0.5 s"),
        ({"status": 200, "body": b"<html>sign in</html>"}, NOT_THE_API),
        ({"status": 200, "body": b'{"data": {"viewer": null}}'}, NOT_THE_API),
    ],
)
def test_a_server_that_does_not_take_the_key_now_means_offline_within_seconds(
    no_wandb_credentials, monkeypatch, answer, reason
):
    """A wrong key or WANDB_BASE_URL, a page that answers for every host, or a server that hangs or trickles
    sends the run offline with the reason, within the probe's deadline, before wandb starts."""
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    # A short deadline where the server never answers in time, a long one where it answers: a loaded machine
    # must not turn an answer into a timeout.
    timeout_s = 0.5 if reason and "within" in reason else 30
    monkeypatch.setattr(lightning_genae.experiment.loggers, "WANDB_PROBE_TIMEOUT_S", timeout_s)
    with wandb_server(**answer) as (url, seen):
        # Behind a path prefix, as a W&B server of one's own can be: the API is under the whole URL.
        monkeypatch.setenv("WANDB_BASE_URL", f"{url}/wandb/")
        started = time.monotonic()
        found = wandb_offline_reason()
        assert time.monotonic() - started < timeout_s + 1
    if reason is None:
        assert found is None
    else:
        assert found == f"{url.removeprefix('http://')} {reason}"
    expected_auth = "Basic " + base64.b64encode(b"api:" + b"k" * 40).decode()
    assert seen == [("/wandb/graphql", expected_auth)], "one authenticated request to W&B's API"


def test_the_key_is_read_from_netrc_as_wandb_reads_it(no_wandb_credentials, monkeypatch, tmp_path):
    """Under the URL's host and port alone, and from a file readable by others too (wandb skips Python's
    permission check): the run goes online exactly where wandb.init would find the key."""
    home_netrc = tmp_path / "home" / ".netrc"
    home_netrc.parent.mkdir(parents=True, exist_ok=True)
    home_netrc.write_text("machine 127.0.0.1 login user password " + "h" * 40 + "\n")
    home_netrc.chmod(0o644)
    monkeypatch.delenv("NETRC")
    probed = []
    probe = "_wandb_refusal"
    monkeypatch.setattr(lightning_genae.experiment.loggers, probe, lambda url, host, key: probed.append(key))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:19200")
    assert "no W&B API key" in wandb_offline_reason(), "a host without the URL's port is not wandb's entry"
    home_netrc.write_text("machine 127.0.0.1:19200 login user password " + "p" * 40 + "\n")
    assert wandb_offline_reason() is None and probed == ["p" * 40]


def test_a_password_in_wandb_base_url_never_reaches_a_printed_line(no_wandb_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://user:secretpw@127.0.0.1:9")
    reason = wandb_offline_reason()
    assert reason.startswith("127.0.0.1:9 is unreachable") and "secretpw" not in reason


def test_a_key_in_the_netrc_file_named_by_netrc_for_the_server_of_wandb_base_url_is_a_key(
    no_wandb_credentials, monkeypatch, tmp_path
):
    """A key `wandb login` kept for a W&B server of one's own, or one in the file NETRC names, is found as
    wandb finds it."""
    netrc_file = tmp_path / "elsewhere" / "netrc"
    netrc_file.parent.mkdir()
    # As wandb's `login` writes it for a server with a port.
    netrc_file.write_text("machine wandb.corp.example:8443 login user password " + "k" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.corp.example:8443")
    probed = []
    probe = "_wandb_refusal"
    record = lambda url, host, key: probed.append((url, key))  # noqa: E731
    monkeypatch.setattr(lightning_genae.experiment.loggers, probe, record)
    assert wandb_offline_reason() is None
    assert probed == [("https://wandb.corp.example:8443/graphql", "k" * 40)]
    monkeypatch.delenv("WANDB_BASE_URL")
    assert "no W&B API key" in wandb_offline_reason()


def test_wandb_mode_offline_is_respected(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline_reason() == "WANDB_MODE=offline"


def test_each_run_in_a_process_names_the_users_reason_for_offline(no_wandb_credentials, tmp_path, capsys):
    # An offline run leaves WANDB_MODE alone: a grid's next cell must not take it for the user's.
    from lightning_genae.experiment.cli import main

    args = ["--model", "ae", *SMALL, "--max-steps", "2", "--logger", "wandb"]
    for name in ("one", "two"):
        assert main([*args, "--output", str(tmp_path / name)]) == 0
        assert "wandb: offline (no W&B API key" in capsys.readouterr().out
    assert "WANDB_MODE" not in os.environ


@pytest.mark.slow
def test_wandb_offline_run_prints_one_line_from_wandb_and_logs_images(no_wandb_credentials, tmp_path):
    # A real process: wandb prints some warnings once per process, so an in-process run could miss them.
    run_dir = tmp_path / "run"
    environment = {key: value for key, value in os.environ.items() if key != "WANDB_MODE"}
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", "gan", *SMALL, "--max-steps", "2"]
        + ["--logger", "wandb", "--output", str(run_dir)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    wandb_lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("wandb:")]
    assert wandb_lines == [
        "wandb: offline (no W&B API key (set WANDB_API_KEY or run `wandb login`)); "
        f"upload later with: wandb sync {run_dir / 'wandb'}/offline-run-*"
    ]
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    pictures = list(offline_runs[0].glob("files/media/images/samples_*.png"))
    assert pictures, "the sample grid reaches W&B"
    # As the run folder's grid, not black (wandb reads float pixels as 0-255).
    from PIL import Image

    with (
        Image.open(pictures[0]) as picture,
        Image.open(next((run_dir / "images").glob("samples_*.png"))) as own,
    ):
        assert picture.getextrema() == own.convert(picture.mode).getextrema() and max(picture.getextrema())
    assert (run_dir / "metrics.csv").is_file(), "CSV is always on"


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_wandb_init_gets_the_same_run_with_quiet_settings(
    no_wandb_credentials, tmp_path, monkeypatch, online
):
    if online:
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.setattr(lightning_genae.experiment.loggers, "_wandb_refusal", lambda url, host, key: None)
    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or object())
    for _ in range(2):  # a second build is a resume of the same run folder
        loggers = build_loggers(RunConfig(logger=["wandb"], wandb_project="project"), tmp_path)
        _ = loggers[1].experiment
    first, resumed = calls
    assert first["id"] == resumed["id"] and first["resume"] == "allow"
    assert first["project"] == "project" and first["name"] == tmp_path.name and first["dir"] == str(tmp_path)
    # Online keeps W&B's lines with the run's URL; offline our own line replaces W&B's banner.
    assert first["settings"] == ({"quiet": True} if online else {"silent": True})
    assert "anonymous" not in first, "recent wandb warns about any value of this retired setting"
    assert first.get("mode") == (None if online else "offline") and "WANDB_MODE" not in os.environ


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def test_the_chosen_checkpoints_test_metrics_join_the_final_ones_in_the_wandb_summary(tmp_path):
    class Recorded:
        def __init__(self) -> None:
            self.summary: dict = {}
            self.finished = False

        def finish(self) -> None:
            self.finished = True

    class RecordingWandbLogger(WandbLogger):
        recorded = Recorded()

        @property
        def experiment(self):
            return self.recorded

    logger = RecordingWandbLogger(save_dir=str(tmp_path), offline=True)
    final = {"test/fd_classifier": 20.0, "val/fd_classifier": 19.0}
    selected = {"step": 2, "chosen_on": "val/fd_classifier", "test_metrics": {"test/fd_classifier": 18.5}}
    finish_loggers([logger], final, selected)
    assert logger.recorded.summary == {**final, "selected/test/fd_classifier": 18.5, "selected/step": 2}
    assert logger.recorded.finished
    # A run without a chosen checkpoint (no validation ran) adds nothing.
    logger.recorded = Recorded()
    finish_loggers([logger], final, {"path": None, "note": "no validation ran"})
    assert logger.recorded.summary == final


def test_csv_resume_keeps_history_before_the_checkpoint_only(tmp_path):
    rows = [
        {"step": 2, "train/loss": 1.0, "val/loss": ""},
        {"step": 4, "train/loss": "", "val/loss": 0.8},
        {"step": 4, "train/loss": 0.9, "val/loss": ""},
        {"step": 6, "train/loss": 0.7, "val/loss": ""},
    ]
    with (tmp_path / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["step", "train/loss", "val/loss"])
        writer.writeheader()
        writer.writerows(rows)
    logger = RunFolderCSVLogger(tmp_path, resume_step=4)
    logger.log_metrics({"train/loss": 0.5}, step=4)
    logger.save()
    with (tmp_path / "metrics.csv").open(newline="") as file:
        kept = [(row["step"], row["train/loss"], row["val/loss"]) for row in csv.DictReader(file)]
    assert kept == [("2", "1.0", ""), ("4", "", "0.8"), ("4", "0.5", "")]


@pytest.mark.parametrize("evaluates_again", [True, False], ids=["final-evaluation-again", "extended"])
def test_csv_resume_drops_the_test_rows_of_a_final_evaluation_it_runs_again(tmp_path, evaluates_again):
    """A run stopped during its final evaluation (after the test row, during the best checkpoint's) runs the
    evaluation again when resumed at its last iteration: the earlier test row goes, or it would be twice. An
    extended run (resumed to a larger budget) keeps its finished budget's test row."""
    with (tmp_path / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["step", "train/loss", "val/loss", "test/loss"])
        writer.writeheader()
        writer.writerows(
            [
                {"step": 3, "train/loss": 1.0},
                {"step": 4, "val/loss": 0.8},
                {"step": 4, "test/loss": 0.85},
            ]
        )
    logger = RunFolderCSVLogger(tmp_path, resume_step=4, evaluates_again=evaluates_again)
    logger.log_metrics({"test/loss": 0.75}, step=8 - 4 * evaluates_again)
    logger.save()
    with (tmp_path / "metrics.csv").open(newline="") as file:
        kept = [(row["step"], row["val/loss"], row["test/loss"]) for row in csv.DictReader(file)]
    if evaluates_again:
        assert kept == [("3", "", ""), ("4", "0.8", ""), ("4", "", "0.75")]
    else:
        assert kept == [("3", "", ""), ("4", "0.8", ""), ("4", "", "0.85"), ("8", "", "0.75")]


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: text.rindex("0.25") + 3],  # cut inside the last value, no newline
        lambda text: text[: text.rindex(",")],  # cut between two cells: the row lacks a field
        lambda text: text + "\x00" * 64,  # a crash's unwritten block
    ],
    ids=["cut-in-a-value", "cut-between-cells", "nul-bytes"],
)
def test_csv_resume_leaves_out_a_row_cut_short_and_says_so(tmp_path, damage, capsys):
    """A run folder copied while a row was being appended (or after a crash) ends with a partial row:
    its cut-off value must not become a number of the run's history."""
    text = "step,train/loss,val/loss\n2,1.0,\n4,0.5,0.25\n"
    (tmp_path / "metrics.csv").write_text(damage(text))
    logger = RunFolderCSVLogger(tmp_path, resume_step=6)
    logger.log_metrics({"train/loss": 0.4}, step=6)
    logger.save()
    with (tmp_path / "metrics.csv").open(newline="") as file:
        kept = [(row["step"], row["train/loss"], row["val/loss"]) for row in csv.DictReader(file)]
    assert kept[0] == ("2", "1.0", "") and kept[-1] == ("6", "0.4", "")
    assert all("\x00" not in "".join(row) for row in kept)
    if len(kept) == 3:  # only NUL bytes after a whole row: that row is whole
        assert kept[1] == ("4", "0.5", "0.25")
    else:
        assert "cut short by an unfinished write left out" in capsys.readouterr().out


def test_csv_resume_without_its_file_says_where_the_history_starts(tmp_path, capsys):
    logger = RunFolderCSVLogger(tmp_path, resume_step=6)
    logger.log_metrics({"train/loss": 0.4}, step=6)
    logger.save()
    assert "metrics.csv is missing: its rows start again at iteration 6" in capsys.readouterr().out


def test_csv_fresh_run_replaces_an_old_file(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,old\n1,2\n")
    logger = RunFolderCSVLogger(tmp_path)
    logger.log_metrics({"new": 1.0}, step=0)
    logger.save()
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "new,step"


def test_csv_key_first_logged_later_gets_a_column_blank_in_earlier_rows(tmp_path):
    logger = RunFolderCSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=1)
    logger.save()
    logger.log_metrics({"train/loss": 0.9, "val/loss": 0.8}, step=2)
    logger.save()
    header, rows = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "val/loss"]
    assert [(row["step"], row["train/loss"], row["val/loss"]) for row in rows] == [
        ("1", "1.0", ""),
        ("2", "0.9", "0.8"),
    ]


def test_csv_rows_reach_the_file_on_save_not_before(tmp_path):
    logger = RunFolderCSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=1)
    logger.save()
    logger.log_metrics({"train/loss": 0.5}, step=2)
    # A crash now loses the unsaved row only.
    assert [row["step"] for row in read_csv(tmp_path / "metrics.csv")[1]] == ["1"]
    logger.finalize("success")
    assert [row["step"] for row in read_csv(tmp_path / "metrics.csv")[1]] == ["1", "2"]


def test_csv_resume_keeps_columns_of_the_old_file_and_adds_new_ones(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,train/loss,val/fd\n1,1.0,\n2,,9.0\n3,0.8,\n")
    logger = RunFolderCSVLogger(tmp_path, resume_step=3)
    logger.log_metrics({"train/loss": 0.7, "train/new": 5.0}, step=3)
    logger.save()
    header, rows = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "train/new", "val/fd"]
    assert [tuple(row.values()) for row in rows] == [
        ("1", "1.0", "", ""),
        ("2", "", "", "9.0"),
        ("3", "0.7", "5.0", ""),
    ]


def test_csv_file_is_left_alone_until_rank_zero_saves(tmp_path, monkeypatch):
    # Loggers are built on every process before ranks are known; only rank zero may touch the file.
    old = "step,old\n1,2\n"
    (tmp_path / "metrics.csv").write_text(old)
    logger = RunFolderCSVLogger(tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == old
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger.log_metrics({"new": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert (tmp_path / "metrics.csv").read_text() == old


def test_loggers_use_no_private_lightning_api():
    # Private Lightning classes change without notice between releases (see RunFolderCSVLogger).
    tree = ast.parse(Path(lightning_genae.experiment.loggers.__file__).read_text())
    imported = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    imported += [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ]
    lightning = [name for name in imported if name.split(".")[0] in LIGHTNING]
    assert lightning, "the check must see loggers.py's Lightning imports"
    assert [name for name in lightning if any(part.startswith("_") for part in name.split("."))] == []


LIGHTNING = {"lightning", "lightning_fabric", "pytorch_lightning"}


@pytest.mark.parametrize("kept", ["", "../../x", "\x00\x01", "a b"])
def test_a_wandb_run_id_file_that_holds_no_id_is_replaced_by_a_new_id(tmp_path, kept, capsys):
    """wandb.init stops the run on an empty or malformed id ('Run ID cannot be empty'): the folder's file
    is read as holding none, and a new id is written over it."""
    id_file = tmp_path / "wandb" / "run_id"
    id_file.parent.mkdir()
    id_file.write_text(kept)
    run_id = lightning_genae.experiment.loggers._stable_wandb_id(tmp_path)
    assert run_id and run_id != kept.strip() and id_file.read_text() == run_id
    assert "does not hold a W&B run id" in capsys.readouterr().out
    assert lightning_genae.experiment.loggers._stable_wandb_id(tmp_path) == run_id


def test_a_wandb_failure_at_the_end_leaves_the_finished_run_finished(tmp_path, capsys, monkeypatch):
    """W&B down (or wandb's own uploader crashing) when the run closes: one line naming `wandb sync`, not a
    traceback and exit 1 for a run whose summary.json and checkpoints are written."""

    class Unreachable:
        summary: dict = {}

        def finish(self):
            raise ConnectionResetError("connection reset by peer")

    class ClosingFails(WandbLogger):
        @property
        def experiment(self):
            return Unreachable()

    monkeypatch.setenv("WANDB_MODE", "offline")  # whatever the logger sets is put back after the test
    finish_loggers([ClosingFails(save_dir=str(tmp_path), offline=True)], {"test/loss": 1.0})
    err = capsys.readouterr().err
    assert "wandb: could not finish the W&B run (ConnectionResetError: connection reset by peer)" in err
    assert f"wandb sync {tmp_path / 'wandb'}/*run-*" in err and err.count("\n") == 1


def test_wandb_mode_disabled_writes_no_wandb_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    loggers = build_loggers(RunConfig(logger=["csv", "wandb"]), tmp_path)
    assert [type(logger).__name__ for logger in loggers] == ["RunFolderCSVLogger"]
    assert "wandb: disabled (WANDB_MODE=disabled); nothing is logged to W&B" in capsys.readouterr().out
    assert not (tmp_path / "wandb").exists()


def test_a_resumed_runs_tensorboard_events_after_its_checkpoint_are_purged(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    (tensorboard,) = [
        logger
        for logger in build_loggers(RunConfig(logger=["csv", "tensorboard"]), tmp_path, resume_step=10)
        if isinstance(logger, TensorBoardLogger)
    ]
    assert tensorboard._kwargs["purge_step"] == 11
    (fresh,) = [
        logger
        for logger in build_loggers(RunConfig(logger=["csv", "tensorboard"]), tmp_path)
        if isinstance(logger, TensorBoardLogger)
    ]
    assert "purge_step" not in fresh._kwargs


@pytest.mark.parametrize(
    ("environment", "refused"),
    [
        ({"WANDB_BASE_URL": "localhost:8080"}, True),
        ({"WANDB_BASE_URL": "localhost:8080", "WANDB_MODE": "disabled"}, False),
        ({"WANDB_BASE_URL": "HTTPS://wandb.example:8080"}, False),
        ({"WANDB_BASE_URL": ""}, False),
    ],
)
def test_a_wandb_server_url_that_is_no_http_url_is_refused_before_the_run(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], refused: bool
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config = RunConfig(model="ae", data="digits", logger=["csv", "wandb"])
    if refused:
        with pytest.raises(ConfigError, match="WANDB_BASE_URL localhost:8080 is no http"):
            resolve(config)
    else:
        assert resolve(config).config.logger == ["csv", "wandb"]
    monkeypatch.setenv("WANDB_BASE_URL", "localhost:8080")
    assert resolve(RunConfig(model="ae", data="digits")).config.logger == ["csv"]
