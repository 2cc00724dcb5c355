"""The names of a run's files and folders and of its checkpoints' keys; standard library only, for the CLI."""

from __future__ import annotations

import re
from pathlib import Path

# Where a checkpoint holds the run's configuration (as plain values); what tells a run's checkpoint from
# another Lightning program's.
CONFIG_KEY = "genae_config"
# The options that describe one invocation, not the run: a checkpoint's configuration is read without them,
# and a re-run from config.yaml gets a folder of its own.
PER_INVOCATION = ("output", "resume", "fast_dev_run", "overwrite", "threads")

FAILED_FILE = "failed.json"
CONFIG_FILE = "config.yaml"
# The first line of every run's config.yaml: what tells a run's file from a user's of the same name.
CONFIG_HEADER = "# lightning-genae run"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
NORMALISER_FILE = "normaliser.json"
# The cells an ablation grid planned, at its root: a folder that holds one is a grid's.
GRID_FILE = "grid.json"
CHECKPOINT_DIR = "checkpoints"
# The W&B run id a run chooses before it writes its config.yaml.
WANDB_RUN_ID = "wandb/run_id"

# The files a run (and a grid, for its cells) writes at the top of its folder.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, NORMALISER_FILE, "eval.json", FAILED_FILE)


# The folders a run writes into, each with the names of what it writes there: `--overwrite` removes those
# and nothing else, so a file a user put beside them (images/holiday.jpg, checkpoints/my_model.pt) stays.
RUN_FOLDERS = {
    # ModelCheckpoint's last/best, versioned (-v1) when a name is taken, and the temporary file a killed
    # write of one leaves beside it (AtomicCheckpointIO: `.last.ckpt.<random>.tmp`).
    CHECKPOINT_DIR: re.compile(r"(last|best)(-v\d+)?\.ckpt|\.(last|best)(-v\d+)?\.ckpt\.\w+\.tmp"),
    # loggers.log_image_grid: `<key>_step0000123.png`.
    "images": re.compile(r"[A-Za-z0-9_.-]+_step\d{7}\.png"),
    # TensorBoardLogger(name="tensorboard", version=""): event files and the hyper-parameters.
    "tensorboard": re.compile(r"events\.out\.tfevents\..+|hparams\.yaml"),
    # wandb: the run id kept for resuming, wandb's own run folders (named after the W&B run's id), their
    # link and its logs.
    "wandb": re.compile(
        r"run_id|latest-run|debug(-internal|-cli\..+)?\.log|(offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9_-]+)"
    ),
}


def started_run_files(path: Path) -> list[str]:
    """The files in `path` that show a run was started or finished there (empty: no run)."""
    if not path.is_dir():
        return []
    found = [name for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE) if (path / name).is_file()]
    found += sorted(f"{CHECKPOINT_DIR}/{ckpt.name}" for ckpt in (path / CHECKPOINT_DIR).glob("*.ckpt"))
    return found


def files_named_as_a_runs(path: Path) -> list[str]:
    """The files in `path` named as a run's (config.yaml, checkpoints/last.ckpt...), whoever wrote them."""
    # failed.json and wandb/run_id are left out: a grid records a cell that failed before training in
    # failed.json, and a run names its W&B run (wandb/run_id) before it writes config.yaml, so a run killed
    # in between leaves them without a run. W&B's own run folders there are someone's runs.
    named = [
        name
        for name in RUN_FILES
        if name != FAILED_FILE and ((path / name).is_file() or (path / name).is_symlink())
    ]
    for folder, written in RUN_FOLDERS.items():
        inside = path / folder
        if inside.is_dir() and not inside.is_symlink():
            matching = (
                entry.name
                for entry in inside.iterdir()
                if written.fullmatch(entry.name) and f"{folder}/{entry.name}" != WANDB_RUN_ID
            )
            named += sorted(f"{folder}/{name}" for name in matching)
    return named


def last_checkpoint(run_dir: str | Path) -> Path:
    """`<run>/checkpoints/last.ckpt`, the checkpoint `--resume last` continues."""
    return Path(run_dir) / CHECKPOINT_DIR / "last.ckpt"


# Where a checkpoint written inside a SLURM or torchrun job names that job (`ClusterJob.tag`): a restarted job
# continues only a checkpoint its own earlier attempt wrote, never the run it was started to replace.
CLUSTER_JOB_KEY = "genae_cluster_job"
