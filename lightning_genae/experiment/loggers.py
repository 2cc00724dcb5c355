"""Experiment loggers (CSV always, TensorBoard, W&B) and one adapter that logs images to all of them."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_genae.cache import write_atomically, write_file_atomically
from lightning_genae.cluster import current_job, global_rank
from lightning_genae.errors import RunFolderGone, describe_error
from lightning_genae.experiment.overwrite import WANDB_ID
from lightning_genae.lightning_internals import wandb_init_arguments
from lightning_genae.metrics.names import current_names
from lightning_genae.progress import say, warn
from lightning_genae.run_files import METRICS_FILE, WANDB_RUN_ID


class RunFolderCSVLogger(Logger):
    """`<run>/metrics.csv` with no version sub-folders; a resumed run continues the same file.

    A logger of our own on Lightning's public `Logger` rather than its `CSVLogger`: CSVLogger's writer
    deletes an existing metrics.csv when it starts and builds its header from this session's keys only, so
    keeping the history across a resume meant subclassing its private `_ExperimentWriter`. What a run
    folder needs is small: rows buffered by `log_metrics` and appended by `save()` (Lightning calls it
    after every logging step and at the end, so a crash loses at most the unsaved rows), one `step`
    column, and a header that is the union of every key logged (a key first logged later gets a column,
    blank in earlier rows).
    """

    def __init__(
        self, run_dir: str | Path, resume_step: int | None = None, evaluates_again: bool = False
    ) -> None:
        """`resume_step`: the iteration a resumed run continues from (its rows after it are dropped).
        `evaluates_again`: the resumed run is at the end of its budget and runs its final evaluation again
        (it was stopped during it), so that evaluation's test rows at `resume_step` are dropped too; an
        extended run keeps its finished budget's."""
        super().__init__()
        self._run_dir = Path(run_dir)
        self._resume_step = resume_step
        self._evaluates_again = evaluates_again
        self._rows: list[dict[str, Any]] = []
        # The file is prepared on rank zero's first save(), not here: loggers are built on every process
        # before the Trainer knows which one is rank zero.
        self._keys: list[str] | None = None

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._run_dir)

    @property
    def root_dir(self) -> str:
        return str(self._run_dir)

    @property
    def log_dir(self) -> str:
        return str(self._run_dir)

    @property
    def _metrics_file(self) -> Path:
        return self._run_dir / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: Any = None, *args: Any, **kwargs: Any) -> None:
        # config.yaml in the run folder is the record of the configuration.
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = {key: _plain(value) for key, value in metrics.items()}
        # Lightning always passes the step; without one, rows are numbered as Lightning's CSVLogger does.
        row["step"] = len(self._rows) if step is None else step
        self._rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        if self._keys is None:
            self._keys = self._prepare_file()
        if not self._rows:
            return
        new_keys = set().union(*self._rows) - set(self._keys)
        if new_keys:
            self._keys = sorted({*self._keys, *new_keys})
            if self._metrics_file.is_file():
                self._rewrite(self._read_rows(), self._keys)
        is_new_file = not self._metrics_file.is_file()
        if not self._run_dir.is_dir():
            self._rows = []
            raise RunFolderGone.at(self._run_dir)
        with self._metrics_file.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self._keys)
            if is_new_file:
                writer.writeheader()
            writer.writerows(self._rows)
        self._rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run_dir.is_dir():  # gone, `save` said so already
            self.save()

    def _prepare_file(self) -> list[str]:
        """The header to continue with: none for a fresh run (an old file goes), else the kept rows' keys."""
        self._run_dir.mkdir(parents=True, exist_ok=True)
        if not self._metrics_file.is_file():
            if self._resume_step is not None:
                say(f"{self._metrics_file} is missing: its rows start again at iteration {self._resume_step}")
            return []
        if self._resume_step is None:
            self._metrics_file.unlink()
            return []
        keys, rows, cut_short = read_whole_rows(self._metrics_file)
        if cut_short:
            say(f"{self._metrics_file}: {cut_short} row(s) cut short by an unfinished write left out")
        rows = [row for row in rows if self._logged_before_resume(row)]
        self._rewrite(rows, keys)
        return keys

    def _logged_before_resume(self, row: dict[str, str]) -> bool:
        step = int(float(row.get("step") or 0))
        if step < self._resume_step:
            return True
        # Validation at the resume step ran before that checkpoint was saved; training rows there did not, nor
        # did the test rows of a final evaluation that runs again.
        again = ("train/", "test/") if self._evaluates_again else ("train/",)
        logged_after_the_save = any(row.get(key) for key in row if key.startswith(again))
        return step == self._resume_step and not logged_after_the_save

    def _read_rows(self) -> list[dict[str, str]]:
        with self._metrics_file.open(newline="") as file:
            return list(csv.DictReader(file))

    def _rewrite(self, rows: list[dict[str, str]], keys: list[str]) -> None:
        """The whole file again under the header `keys`; atomic, so a crash here keeps the old file."""

        def write(path: str) -> None:
            with open(path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)

        write_atomically(self._metrics_file, write)


def read_whole_rows(path: Path) -> tuple[list[str], list[dict[str, str]], int]:
    """metrics.csv at `path`: its columns and whole rows, each under the names metrics have now (a column an
    earlier version wrote under a former name continues under its name now), and how many rows were cut
    short and left out: a copy taken mid-append, or a crash's NUL bytes (the file ends at the first, and
    Python 3.10's csv refuses them), cut a row's last value too."""
    text = path.read_text(encoding="utf-8", errors="replace").split("\x00", 1)[0]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    keys = sorted(current_names(dict.fromkeys(reader.fieldnames or [])))
    read = list(reader)
    whole = [
        current_names(row)
        for index, row in enumerate(read)
        if None not in row and None not in row.values() and (index < len(read) - 1 or text.endswith("\n"))
    ]
    return keys, whole, len(read) - len(whole)


def logged_values(path: Path, prefixes: Mapping[int, str]) -> dict[str, float]:
    """The values metrics.csv at `path` holds at each step of `prefixes` under the names starting with that
    step's prefix (later rows win), in one reading of the file; {} without it."""
    if not path.is_file():
        return {}
    values: dict[str, float] = {}
    for row in read_whole_rows(path)[1]:
        try:
            prefix = prefixes.get(int(float(row.get("step") or -1)))
        except ValueError:
            continue
        for key, value in row.items() if prefix is not None else ():
            if key.startswith(prefix):
                try:
                    values[key] = float(value)
                except ValueError:
                    pass  # an empty cell: the value belongs to another row
    return values


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else value


def wandb_offline_reason() -> str | None:
    """Why W&B must run offline, or None when it can go online: WANDB_MODE, no API key, or a server that
    does not take the key now. wandb's own login finds the key as wandb.init would (WANDB_API_KEY, `wandb
    login`'s netrc entry for WANDB_BASE_URL's server) and verifies it within WANDB_HTTP_TIMEOUT (10 s),
    where wandb.init would retry for minutes and then end the run with a traceback."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    import wandb

    try:
        if not wandb.login(prompt=False, verify=True):
            return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    except Exception as error:  # noqa: BLE001 - any failure to log in (unreachable, refused, a bad URL) is offline
        # The URL's user and password, should it hold them, never reach a printed line.
        return re.sub(r"//[^/@\s]*@", "//", describe_error(error))
    return None


def build_loggers(
    names: Sequence[str],
    run_dir: Path,
    run_name: str,
    wandb_project: str,
    wandb_group: str | None = None,
    resume_step: int | None = None,
    evaluates_again: bool = False,
) -> list[Logger]:
    """CSV first (always), then the requested TensorBoard/W&B loggers, all writing under `run_dir`."""
    loggers: list[Logger] = [
        RunFolderCSVLogger(run_dir, resume_step=resume_step, evaluates_again=evaluates_again)
    ]
    if "tensorboard" in names:
        # A resumed run's events after its checkpoint (written by the session that was stopped) are purged,
        # as metrics.csv drops its rows after it: TensorBoard would show those steps twice.
        purge = {} if resume_step is None else {"purge_step": resume_step + 1}
        loggers.append(
            TensorBoardLogger(
                save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False, **purge
            )
        )
    if "wandb" in names and os.environ.get("WANDB_MODE", "").lower() == "disabled":
        say("wandb: disabled (WANDB_MODE=disabled); nothing is logged to W&B")
    elif "wandb" in names:
        reason = wandb_offline_reason()
        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        wandb_logger = WandbLogger(
            project=wandb_project,
            name=run_name,
            group=wandb_group,
            save_dir=str(run_dir),
            # Resuming a run folder continues its W&B run rather than starting a second one.
            id=_stable_wandb_id(run_dir),
            resume="allow",
            # wandb.init's own mode, not WandbLogger's `offline`, which sets WANDB_MODE for the whole process.
            mode="offline" if reason is not None else "online",
            settings=_quiet_wandb_settings(reason is not None),
        )
        _drop_retired_anonymous_setting(wandb_logger)
        if reason is not None:
            offline_runs = f"{shlex.quote(str(wandb_dir))}/offline-run-*"
            say(f"wandb: offline ({reason}); upload later with: wandb sync {offline_runs}")
        loggers.append(wandb_logger)
    return loggers


@rank_zero_only
def finish_loggers(
    loggers: Sequence[Logger], final_metrics: dict[str, float], selected: dict[str, Any] | None = None
) -> None:
    """Close W&B runs with the final metrics in their summary, so the next run in-process starts fresh.

    `selected`: summary.json's record of the checkpoint chosen on validation. Its test metrics go into the
    W&B summary as `selected/test/...` (its step as `selected/step`), beside the final weights' `test/...`,
    so runs compared in W&B can be compared on the weights a user would keep. They are not logged as rows:
    metrics.csv and the loggers' histories hold the final weights alone.
    """
    chosen = {}
    if selected is not None and "test_metrics" in selected:
        chosen = {f"selected/{name}": value for name, value in selected["test_metrics"].items()}
        chosen["selected/step"] = selected["step"]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.summary.update({**final_metrics, **chosen})
                logger.experiment.finish()
            except Exception as error:  # noqa: BLE001 - W&B down at the end: the run itself is complete
                wandb_dir = shlex.quote(str(Path(logger.save_dir or ".") / "wandb"))
                warn(
                    f"wandb: could not finish the W&B run ({describe_error(error)}); the run is complete in "
                    f"its folder, and its W&B files can be uploaded later with: wandb sync {wandb_dir}/*run-*"
                )


def _quiet_wandb_settings(offline: bool) -> dict[str, bool]:
    """wandb.init settings that leave the terminal to what a user can act on.

    Offline, everything the run prints (version banner, local folder, `wandb leet`, run history, sync
    command) repeats our one line or the run folder, so `silent` drops it; wandb's own warnings and
    errors outside the run still print. Online, `quiet` keeps the run's URL, the upload count, warnings
    and errors, and drops the banner, the history panel and the log paths; `silent` would hide the URL.
    Per-run settings, so nothing else in the process changes.
    """
    return {"silent": True} if offline else {"quiet": True}


def _drop_retired_anonymous_setting(logger: WandbLogger) -> None:
    """Stop WandbLogger passing `anonymous=None` to wandb.init, which recent wandb warns about.

    Lightning sets that retired setting whatever the caller passes and offers no argument to leave it
    out, so this edits the arguments WandbLogger keeps for wandb.init. Absent and None both mean wandb's
    default, so the run is the same; should Lightning rename the attribute or stop passing the setting,
    this does nothing and at worst the warning is back.
    """
    init_arguments = wandb_init_arguments(logger)
    if init_arguments is not None and "anonymous" in init_arguments and init_arguments["anonymous"] is None:
        del init_arguments["anonymous"]


def _stable_wandb_id(run_dir: Path) -> str:
    """One W&B run id per run folder, kept in the folder so a resume finds it again.

    In a SLURM or torchrun job every rank starts at once, and a requeued job may start before the id file
    of its first start was written: the id is then derived from the job and the folder, so all ranks and
    every restart name the same W&B run (continued with resume="allow", never duplicated). Only rank 0
    writes the file.
    """
    id_file = run_dir / WANDB_RUN_ID
    if id_file.is_file():
        try:
            kept = id_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            kept = ""
        if WANDB_ID.fullmatch(kept):
            return kept
        # Empty, damaged or hand-edited: wandb.init would stop the run on it; a new id is written over it.
        say(f"{id_file} does not hold a W&B run id ({kept[:40]!r}); the run gets a new one")
    job = current_job()
    if job is None:
        run_id = secrets.token_hex(4)
    else:
        # The cluster's name too: two clusters reuse job ids, and a shared project must not mix their runs.
        identity = f"{os.environ.get('SLURM_CLUSTER_NAME', '')}|{job.tag}|{run_dir.resolve()}"
        run_id = f"{job.tag[:40]}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
    if global_rank() == 0:
        write_file_atomically(id_file, run_id)
    return run_id
