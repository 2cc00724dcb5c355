"""Experiment loggers (CSV always, TensorBoard, W&B) and one adapter that logs images to all of them."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import http.client
import io
import json
import netrc
import os
import secrets
import shlex
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_genae.cache import write_atomically, write_file_atomically
from lightning_genae.cluster import current_job, global_rank
from lightning_genae.errors import RunFolderGone, describe_error
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.overwrite import kept_wandb_id
from lightning_genae.lightning_internals import wandb_init_arguments
from lightning_genae.progress import say, warn
from lightning_genae.run_files import METRICS_FILE, WANDB_RUN_ID


class RunFolderCSVLogger(Logger):
    """`<run>/metrics.csv`, continued on resume (Lightning's `CSVLogger` deletes it), of every key logged."""

    def __init__(
        self, run_dir: str | Path, resume_step: int | None = None, evaluates_again: bool = False
    ) -> None:
        """`resume_step`: a resumed run's iteration (rows after it go, its test rows if `evaluates_again`)."""
        super().__init__()
        self._run_dir = Path(run_dir)
        self._resume_step = resume_step
        self._evaluates_again = evaluates_again
        self._rows: list[dict[str, Any]] = []
        # Prepared on rank zero's first save(): loggers are built before the ranks are known.
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
    def _metrics_file(self) -> Path:
        return self._run_dir / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: Any = None, *args: Any, **kwargs: Any) -> None:
        return None  # config.yaml is the record of the configuration

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = {key: v.item() if isinstance(v, torch.Tensor) else v for key, v in metrics.items()}
        row["step"] = len(self._rows) if step is None else step
        self._rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        if self._keys is None:
            self._keys = self._prepare_file()
        if not self._rows:
            return
        if not self._run_dir.is_dir():
            self._rows = []
            raise RunFolderGone.at(self._run_dir)
        new_keys = set().union(*self._rows) - set(self._keys)
        if new_keys or not self._metrics_file.is_file():
            # A new file or column: the whole file again under the (wider) header.
            self._keys = sorted({*self._keys, *new_keys})
            written = read_whole_rows(self._metrics_file)[1] if self._metrics_file.is_file() else []
            self._rewrite([*written, *self._rows], self._keys)
        else:
            with self._metrics_file.open("a", newline="") as file:
                csv.DictWriter(file, fieldnames=self._keys).writerows(self._rows)
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
        # Validation at the resume step ran before its checkpoint was saved; training there did not.
        again = ("train/", "test/") if self._evaluates_again else ("train/",)
        logged_after_the_save = any(row.get(key) for key in row if key.startswith(again))
        return step == self._resume_step and not logged_after_the_save

    def _rewrite(self, rows: list[dict[str, str]], keys: list[str]) -> None:
        """The whole file again under the header `keys`; atomic, so a crash here keeps the old file."""

        def write(path: str) -> None:
            with open(path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)

        write_atomically(self._metrics_file, write)


def read_whole_rows(path: Path) -> tuple[list[str], list[dict[str, str]], int]:
    """metrics.csv's columns and whole rows, and how many cut short (mid-append, NUL bytes) were left out."""
    text = path.read_text(encoding="utf-8", errors="replace").split("\x00", 1)[0]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    keys = sorted(reader.fieldnames or [])
    read = list(reader)
    whole = [
        row
        for index, row in enumerate(read)
        if None not in row and None not in row.values() and (index < len(read) - 1 or text.endswith("\n"))
    ]
    return keys, whole, len(read) - len(whole)


def logged_values(path: Path, prefixes: Mapping[int, str]) -> dict[str, float]:
    """metrics.csv's values at each step of `prefixes` under names with its prefix (later rows win)."""
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
                with contextlib.suppress(ValueError):  # an empty cell: the value belongs to another row
                    values[key] = float(value)
    return values


def wandb_offline_reason() -> str | None:
    """Why W&B must run offline (WANDB_MODE, no key, a server that does not take the key now), or None."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun"):
        return f"WANDB_MODE={mode}"
    # The server wandb talks to: WANDB_BASE_URL (a W&B server of one's own), else W&B's cloud.
    base_url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    base = urllib.parse.urlsplit(base_url)
    key = os.environ.get("WANDB_API_KEY") or _netrc_key(base.netloc)
    if not key:
        return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    # The host and port alone: a password in the URL never reaches a printed line.
    host = f"{base.hostname}:{base.port}" if base.port else str(base.hostname or base_url)
    outcome: list[str | None] = []
    # As wandb does: the API under the whole base URL, a server behind a path prefix included.
    url = f"{base_url.rstrip('/')}/graphql"
    # In a thread, for one deadline on the whole exchange (a socket's timeout holds per read): wandb.init
    # would retry for minutes and end with a traceback.
    asking = threading.Thread(target=lambda: outcome.append(_wandb_refusal(url, host, key)), daemon=True)
    asking.start()
    asking.join(WANDB_PROBE_TIMEOUT_S)
    return outcome[0] if outcome else f"{host} did not answer within {WANDB_PROBE_TIMEOUT_S:g} s"


def _netrc_key(machine: str) -> str | None:
    """`wandb login`'s key for `machine` in ~/.netrc or NETRC's file (named, as wandb does, which skips
    Python's check of the file's permissions)."""
    try:
        entries = netrc.netrc(os.path.expanduser(os.environ.get("NETRC") or "~/.netrc"))
    except (OSError, netrc.NetrcParseError):
        return None
    found = entries.authenticators(machine)
    return found[2] if found is not None else None


WANDB_PROBE_TIMEOUT_S = 5.0


def _wandb_refusal(url: str, host: str, key: str) -> str | None:
    """None where W&B's API at `url` names the user of `key`, else why not."""
    auth = base64.b64encode(f"api:{key}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {auth}"}
    request = urllib.request.Request(url, data=b'{"query": "{ viewer { id } }"}', headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WANDB_PROBE_TIMEOUT_S) as response:
            if json.loads(response.read(1 << 16))["data"]["viewer"]:
                return None
    except urllib.error.HTTPError as error:
        return f"{host} answered W&B's API with HTTP {error.code} ({_CHECK})"
    except (OSError, http.client.HTTPException) as error:
        return f"{host} is unreachable ({getattr(error, 'reason', error)})"
    except (ValueError, LookupError, TypeError):
        pass  # not W&B's API: a proxy's or a sign-in page
    return f"{host} does not answer as W&B's API for the key ({_CHECK})"


_CHECK = "check WANDB_API_KEY (or `wandb login`) and WANDB_BASE_URL"


def build_loggers(
    config: RunConfig, run_dir: Path, resume_step: int | None = None, evaluates_again: bool = False
) -> list[Logger]:
    """CSV first (always), then `config`'s TensorBoard/W&B loggers, all writing under `run_dir`."""
    loggers: list[Logger] = [
        RunFolderCSVLogger(run_dir, resume_step=resume_step, evaluates_again=evaluates_again)
    ]
    if "tensorboard" in config.logger:
        # A resumed run's events after its checkpoint are purged, as metrics.csv drops its rows after it.
        purge = {} if resume_step is None else {"purge_step": resume_step + 1}
        loggers.append(
            TensorBoardLogger(
                save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False, **purge
            )
        )
    if "wandb" in config.logger and os.environ.get("WANDB_MODE", "").lower() == "disabled":
        say("wandb: disabled (WANDB_MODE=disabled); nothing is logged to W&B")
    elif "wandb" in config.logger:
        reason = wandb_offline_reason()
        offline = reason is not None
        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        wandb_logger = WandbLogger(
            project=config.wandb_project,
            name=run_dir.name,
            group=config.wandb_group,
            save_dir=str(run_dir),
            # Given to wandb.init, not as Lightning's `offline`, which sets WANDB_MODE for the whole process.
            **({"mode": "offline"} if offline else {}),
            # Resuming a run folder continues its W&B run rather than starting a second one.
            id=_stable_wandb_id(run_dir),
            resume="allow",
            # Offline `silent` (what wandb prints repeats our line); online `quiet` keeps its URL and errors.
            settings={"silent": True} if offline else {"quiet": True},
        )
        # WandbLogger passes `anonymous=None`, wandb's default, which recent wandb warns about.
        init_arguments = wandb_init_arguments(wandb_logger) or {}
        if "anonymous" in init_arguments and init_arguments["anonymous"] is None:
            del init_arguments["anonymous"]
        if offline:
            offline_runs = f"{shlex.quote(str(wandb_dir))}/offline-run-*"
            say(f"wandb: offline ({reason}); upload later with: wandb sync {offline_runs}")
        loggers.append(wandb_logger)
    return loggers


@rank_zero_only
def finish_loggers(
    loggers: Sequence[Logger], final_metrics: dict[str, float], selected: dict[str, Any] | None = None
) -> None:
    """Close W&B runs with the final and `selected/test/...` metrics in their summary."""
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
                    f"wandb: could not finish the W&B run ({describe_error(error)}); upload it later with: "
                    f"wandb sync {wandb_dir}/*run-*"
                )


def _stable_wandb_id(run_dir: Path) -> str:
    """One W&B run id per run folder, kept in the folder so a resume finds it again; in a SLURM or torchrun
    job derived from the job and the folder, so all ranks and every restart name the same W&B run."""
    id_file = run_dir / WANDB_RUN_ID
    if (kept := kept_wandb_id(run_dir)) is not None:
        return kept
    if id_file.is_file():
        say(f"{id_file} does not hold a W&B run id; the run gets a new one")
    job = current_job()
    if job is None:
        run_id = secrets.token_hex(4)
    else:
        # The cluster's name too: two clusters reuse job ids.
        identity = f"{os.environ.get('SLURM_CLUSTER_NAME', '')}|{job.tag}|{run_dir.resolve()}"
        run_id = f"{job.tag[:40]}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
    if global_rank() == 0:
        write_file_atomically(id_file, run_id)
    return run_id
