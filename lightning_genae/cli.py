"""`python run.py` / `genae`: the command line, generated from RunConfig.

Precedence: RunConfig defaults < resumed checkpoint's configuration < `--config FILE` < command line.

Lightning is imported only by what trains, evaluates or reads a checkpoint (imports inside the functions
below): `--help`, `--version`, `--print-config` and every configuration error answer without it, in about
the time `import torch` takes (tests/test_startup.py, bench/startup.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lightning_genae import __version__
from lightning_genae.ablation.tuning import (
    TUNABLE_OPTIONS,
    candidate_separators,
    candidate_texts,
    check_tuning_request,
    split_candidates,
)
from lightning_genae.augmentation import DEFAULTS as AUGMENT_DEFAULTS
from lightning_genae.augmentation import augmentation_choices
from lightning_genae.cluster import RunInterrupted, current_job, global_rank
from lightning_genae.config import (
    CONFIG_FIELDS,
    CONFIG_TYPES,
    LOGGER_CHOICES,
    NO_BACKBONE,
    RunConfig,
    accepts_auto,
    check_path_values,
    flag,
    float_or_auto,
    load_config_file,
    merge,
    resume_conflicts,
    type_name,
)
from lightning_genae.datamodules import DATASETS
from lightning_genae.datamodules.imagefiles import FOLDER_DEFAULT_SHAPE
from lightning_genae.errors import ConfigError, GenaeError
from lightning_genae.models import MODELS
from lightning_genae.resolve import DEFAULT_MAX_STEPS, ResolvedRun, model_option_names, resolve
from lightning_genae.run_folder import check_output_folder

if TYPE_CHECKING:
    from lightning_genae.ablation import CellOutcome, CellStart, GridCell, GridPlan
    from lightning_genae.ablation.tuning import TuningPlan
    from lightning_genae.checkpoint import RunCheckpoint

GROUP_TITLES = {
    "what": "what to train on",
    "training": "optimisation",
    "model": "model (family-specific options say which family takes them)",
    "augmentation": "augmentation (--augment ae, vae, diffaug, ae-d, ada and their combinations)",
    "hardware": "hardware (passed to the Lightning Trainer)",
    "evaluation": "evaluation (FD/KID/precision/recall on validation, then on the test split at the end)",
    "logging": "logging, outputs, checkpoints",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with errors as a single line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _choices_epilog() -> str:
    sections = [
        ("models (--model)", {name: spec.description for name, spec in MODELS.items()}),
        ("datasets (--data)", {name: spec.description for name, spec in DATASETS.items()}),
        ("augmentations (--augment, join with '+')", augmentation_choices()),
        ("loggers (--logger)", LOGGER_CHOICES),
    ]
    lines = []
    for title, entries in sections:
        lines.append(f"{title}:")
        width = max(len(name) for name in entries)
        lines += [f"  {name.ljust(width)}  {text}" for name, text in entries.items()]
        lines.append("")
    lines.append("example: python run.py --model gan --data digits --max-steps 200")
    return "\n".join(lines)


def _int_list(value: str) -> list[int]:
    try:
        return [int(item) for item in _split_list(value)] or [int(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer or a comma list of integers") from None


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class _ExtendList(argparse.Action):
    """`--logger csv,wandb` and `--logger csv --logger wandb` both work."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, current + _split_list(values))


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _owned_defaults() -> dict[str, str]:
    """Defaults that RunConfig leaves to their owner (`None` there), as `--help` shows them."""
    folder_channels, folder_size, _ = FOLDER_DEFAULT_SHAPE
    defaults = {
        "max_steps": f"{DEFAULT_MAX_STEPS} unless --max-epochs",
        "image_size": str(folder_size),
        "channels": f"{folder_channels} for folder, 1 for sines",
        "seq_len": "24",
        "stride": "1",
        "csv_layout": "time",
    }
    defaults.update({name: _shown(value) for name, value in AUGMENT_DEFAULTS.items() if value is not None})
    return defaults


@dataclass(frozen=True)
class _FamilyOption:
    """One model option as the command line shows it: its type, help, and each family's default."""

    name: str
    kind: Any
    help: str
    choices: tuple[str, ...]
    defaults: dict[str, Any]

    @property
    def help_text(self) -> str:
        families = list(self.defaults)
        owners = "" if len(families) == len(MODELS) else "/".join(families) + ": "
        values = set(map(_shown, self.defaults.values()))
        if len(values) == 1:
            default = values.pop()
        else:
            default = ", ".join(f"{family} {_shown(value)}" for family, value in self.defaults.items())
        return f"{owners}{self.help} [default: {default}]"


def _family_options() -> dict[str, _FamilyOption]:
    """Every registered family's options, merged by name (a shared option is declared once, in a base)."""
    merged: dict[str, _FamilyOption] = {}
    for family, spec in MODELS.items():
        kinds = spec.options.types()
        for option in fields(spec.options):
            known = merged.setdefault(
                option.name,
                _FamilyOption(
                    option.name,
                    kinds[option.name],
                    option.metadata["help"],
                    spec.options.choices(option.name),
                    {},
                ),
            )
            known.defaults[family] = option.default
    return merged


def _number_or_auto(text: str) -> float | str:
    try:
        return float_or_auto(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def _add_flag(
    group: argparse._ArgumentGroup, name: str, kind: Any, help_text: str, choices: Sequence[str] | None
) -> None:
    flag = "--" + name.replace("_", "-")
    expected = type_name(kind)
    if expected == "bool":
        group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
    elif expected == "list":
        group.add_argument(flag, action=_ExtendList, metavar="A,B", help=help_text)
    else:
        converter = _number_or_auto if accepts_auto(kind) else {"int": int, "float": float}.get(expected, str)
        if name in TUNABLE_OPTIONS:
            converter = _each_candidate(name, converter)
            example = "A|B" if candidate_separators(name) == "|" else "X,Y"
            help_text += f"; in a grid with --tune-seeds, {example} lists candidates to tune"
        group.add_argument(flag, type=converter, choices=choices or None, help=help_text)


def _each_candidate(name: str, converter: Callable[[str], Any]) -> Callable[[str], str]:
    """A tunable option's argparse type: each candidate it lists is checked by the option's own converter
    (so a bad value is argparse's usual one-line error), and the text is kept, since RunConfig's type
    cannot hold a list; `split_candidates` makes the values."""

    def check(text: str) -> str:
        for item in candidate_texts(name, text) or [text]:
            converter(item)
        return text

    # argparse names the converter in its message: `invalid float value: 'x'`, as for a plain option.
    check.__name__ = getattr(converter, "__name__", "value")
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="run.py",
        description="Train autoencoder-based generative models with PyTorch Lightning.",
        epilog=_choices_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Only options the user typed appear in the namespace, so they can override a config file.
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="read options from YAML; the command line wins")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    parser.add_argument("--version", action="version", version=f"lightning-genae {__version__}")
    parser.add_argument(
        "--evaluate",
        metavar="CKPT",
        help="re-evaluate a saved run's checkpoint (same seeds and N) and write eval.json; "
        "takes --eval-samples, --backbone, --output and hardware options",
    )
    parser.add_argument(
        "--evaluate-folder",
        metavar="DIR",
        help="score a folder of PNG/JPG images against --data's test split; writes --output/eval.json",
    )
    grid = parser.add_argument_group(
        "ablation grid (a comma list in --augment or --train-size, or --seeds, runs one run per cell)"
    )
    grid.add_argument("--seeds", metavar="0,1,2", type=_int_list, help="run every cell with each seed")
    grid.add_argument(
        "--tune-seeds",
        metavar="S[,S...]",
        type=_int_list,
        help="with candidate lists (--augment-p 0.1,0.25, --diffaug-policy 'color|translation,cutout'): "
        "run every candidate of each arm with these seeds first, evaluated on the validation split only, "
        "then each arm's best with --seeds; use seeds not in --seeds",
    )
    grid.add_argument(
        "--grid-index",
        metavar="K",
        type=int,
        help="run only cell K of the grid (a SLURM array index; a tuning grid's tuning cells come first)",
    )
    grid.add_argument(
        "--summarize",
        metavar="ROOT",
        help="rebuild ROOT/ablation.csv, .md and .png from the finished runs of a grid",
    )
    groups = {key: parser.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    registry_choices = {"model": MODELS, "data": DATASETS}
    owned_defaults = _owned_defaults()
    for name, field in CONFIG_FIELDS.items():
        group = groups[field.metadata["group"]]
        default = field.default_factory() if callable(field.default_factory) else field.default
        help_text = field.metadata["help"]
        if default is not None and not isinstance(default, bool):
            help_text += f" [default: {_shown(default)}]"
        elif name in owned_defaults:
            help_text += f" [default: {owned_defaults[name]}]"
        if name == "train_size":
            group.add_argument(
                "--train-size", type=_int_list, metavar="N[,N...]", help=help_text + "; a list makes a grid"
            )
        elif name in registry_choices:
            group.add_argument("--" + name, choices=list(registry_choices[name]), help=help_text)
        elif name in ("fast_dev_run", "overwrite"):
            group.add_argument(flag(name), action="store_true", help=help_text)
        else:
            _add_flag(group, name, CONFIG_TYPES[name], help_text, field.metadata.get("choices"))
    for option in _family_options().values():
        _add_flag(groups["model"], option.name, option.kind, option.help_text, option.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input, 1 training failure)."""
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config", None)
    print_config = args.pop("print_config", False)
    checkpoint_to_evaluate = args.pop("evaluate", None)
    folder_to_evaluate = args.pop("evaluate_folder", None)
    summarize_root = args.pop("summarize", None)
    seeds = args.pop("seeds", None)
    grid_index = args.pop("grid_index", None)
    train_sizes = args.pop("train_size", None)
    tune_seeds = args.pop("tune_seeds", None)
    training = False
    try:
        args, file_values, candidates = _read_inputs(args, config_path, tune_seeds)
        if checkpoint_to_evaluate is not None or folder_to_evaluate is not None:
            return _evaluate(
                checkpoint_to_evaluate, folder_to_evaluate, args, file_values, config_path, train_sizes
            )
        if summarize_root is not None:
            return _summarize(Path(summarize_root))
        augment_value = args.get("augment", file_values.get("augment"))
        augments = _split_list(str(augment_value)) if augment_value is not None else None
        if _is_grid(augments, train_sizes, seeds, grid_index, tune_seeds):
            values = {**file_values, **args}
            if values.get("backbone") == NO_BACKBONE:
                raise ConfigError(
                    "a grid compares its arms on the image metrics, which --backbone none skips; "
                    "drop --backbone none"
                )
            tuning = (candidates, tune_seeds) if tune_seeds is not None else None
            return _run_grid(values, augments, train_sizes, seeds, grid_index, print_config, tuning)
        resolved, resume = _resolve_single_run(args, file_values, train_sizes)
        if print_config:
            _check_shape_options(resolved)
            sys.stdout.write(resolved.config.to_yaml())
            return 0
        _quiet_lightning()
        from lightning_genae.train import run

        training = True
        run(resolved, resume=resume, explicit_resume=args.get("resume") is not None)
    except GenaeError as error:
        print(f"error: {_error_line(error, training)}", file=sys.stderr)
        return error.exit_code
    except RunInterrupted as stop:
        # Every rank stops; rank 0 alone carries the line to print.
        if str(stop):
            print(str(stop), file=sys.stderr)
        return stop.exit_code
    return 0


def _read_inputs(
    args: dict[str, Any], config_path: str | None, tune_seeds: list[int] | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """The command line's values, the config file's, and the candidate lists of a tuning grid, checked
    before any mode reads them."""
    file_values = load_config_file(config_path, known=model_option_names()) if config_path else {}
    # Candidate lists of tunable options leave the values: only a tuning grid takes them.
    file_values, file_candidates = split_candidates(file_values)
    args, candidates = split_candidates(args)
    candidates = {**{k: v for k, v in file_candidates.items() if k not in args}, **candidates}
    check_tuning_request(candidates, tune_seeds)
    # Before any mode reads them: an empty path is never taken for the default or the current folder.
    check_path_values({**file_values, **{key: value for key, value in args.items() if value is not None}})
    output = args.get("output", file_values.get("output"))
    if output:
        # Every mode writes there (a run, a grid's root, eval.json): a bad path is refused before work.
        check_output_folder(Path(output))
    return args, file_values, candidates


def _evaluate(
    checkpoint: str | None,
    folder: str | None,
    args: dict[str, Any],
    file_values: dict[str, Any],
    config_path: str | None,
    train_sizes: list[int] | None,
) -> int:
    """`--evaluate CKPT` or `--evaluate-folder DIR`: measure a saved run, or a folder of images."""
    _quiet_lightning()
    from lightning_genae.evaluate import evaluate_checkpoint, evaluate_folder

    if checkpoint is not None and folder is not None:
        raise ConfigError("--evaluate and --evaluate-folder are separate modes; give one of them")
    if train_sizes is not None:
        args["train_size"] = train_sizes[0]
    if checkpoint is not None:
        if config_path is not None:
            raise ConfigError("--evaluate takes the run's own settings from the checkpoint; drop --config")
        evaluate_checkpoint(checkpoint, args)
    else:
        evaluate_folder(folder, args, file_values)
    return 0


def _summarize(root: Path) -> int:
    """`--summarize ROOT`: rebuild a grid's summary files from the runs it holds."""
    from lightning_genae.ablation import describe_progress, summarize

    paths = summarize(root)
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    print(describe_progress(root))
    return 0


def _is_grid(
    augments: list[str] | None,
    train_sizes: list[int] | None,
    seeds: list[int] | None,
    grid_index: int | None,
    tune_seeds: list[int] | None,
) -> bool:
    """A list of augmentations or train sizes, tuning, or any grid option makes the command a grid."""
    is_grid = len(train_sizes or []) > 1 or len(augments or []) > 1 or tune_seeds is not None
    return is_grid or seeds is not None or grid_index is not None


def _resolve_single_run(
    args: dict[str, Any], file_values: dict[str, Any], train_sizes: list[int] | None
) -> tuple[ResolvedRun, RunCheckpoint | None]:
    """One run's configuration and the checkpoint it continues from, if any.

    Precedence: a resumed run's own configuration, then the config file, then the command line.
    """
    if train_sizes is not None:
        args["train_size"] = train_sizes[0]
    resume = None
    if args.get("resume") is not None:
        _quiet_lightning()
        from lightning_genae.checkpoint import RunCheckpoint

        resume = RunCheckpoint.to_resume(args["resume"], args.get("output"))
    elif "resume" not in args:
        resume = _checkpoint_of_restarted_job(merge(file_values, args))
    base = resume.stored_config("--resume") if resume is not None else {}
    if resume is not None:
        _check_resume_options(resume, base, {**file_values, **args})
    return resolve(merge({**base, **file_values}, args)), resume


def _error_line(error: GenaeError, training: bool) -> str:
    """The one line an error prints: its message, or on ranks other than 0 before training a pointer to
    rank 0's."""
    if not training and global_rank() != 0:
        # Under SLURM or torchrun every rank reads the same input and raises the same error: rank 0's
        # line is the one copy in the job log.
        return f"rank {global_rank()}: stopped by the error rank 0 reports"
    return " ".join(str(error).split("\n"))


def _check_shape_options(resolved: ResolvedRun) -> None:
    """--print-config refuses what the run would: the data shape options are the dataset's to judge.

    Its constructor judges them (a fixed image size or channel count, options a series dataset ignores) and
    imports Lightning, so it is asked only when such an option is given: a plain --print-config stays quick.
    """
    config = resolved.config
    if all(getattr(config, name) is None for name in ("image_size", "channels", "seq_len", "stride")):
        return
    _quiet_lightning()
    resolved.build_datamodule()


def _quiet_lightning() -> None:
    """Import Lightning (through the console) and silence its noise: called by each mode that trains,
    evaluates or reads a checkpoint, after which Lightning's import has set its loggers' levels."""
    from lightning_genae.console import quiet_lightning

    quiet_lightning()


def _checkpoint_of_restarted_job(values: RunConfig) -> RunCheckpoint | None:
    """The checkpoint a requeued SLURM job (or a restarted torchrun job) continues from, or None.

    A restarted job runs its command again, without `--resume`. Its run continues as if `--resume last`
    had been given, from `last.ckpt` in its run folder: the job's own default folder (named after the
    job, so a checkpoint there can only be this job's), or `--output` when the scheduler says this is a
    restart. A job that stopped before its first checkpoint starts from the beginning.
    """
    job = current_job()
    if job is None:
        return None
    _quiet_lightning()
    from lightning_genae.checkpoint import RunCheckpoint, last_checkpoint

    if values.output:
        if job.restart_count == 0:
            return None
        folder = Path(values.output)
    else:
        from lightning_genae.train import default_run_dir

        folder = default_run_dir(resolve(values).config)
    path = last_checkpoint(folder)
    return RunCheckpoint.load(path, "--resume") if path.is_file() else None


def _check_resume_options(resume: RunCheckpoint, stored: dict[str, Any], given: dict[str, Any]) -> None:
    """Options given with --resume that would make it another run (data, model, shapes...) are an error.

    Only what the user gave (flags and --config) is compared, so the checkpoint's own values, another
    family's included, never raise; what may change on resume is CHANGEABLE_ON_RESUME.
    """
    conflicts = resume_conflicts(stored, given)
    if conflicts:
        raise ConfigError(
            f"--resume {resume.path}: {'; '.join(conflicts)} would make it another run; drop "
            f"{'it' if len(conflicts) == 1 else 'them'} to continue it (changeable on resume: --max-steps, "
            "--lr, cadences, loggers, hardware, --eval-samples), or start a new run with another --output"
        )


def _run_grid(
    values: dict[str, Any],
    augments: list[str] | None,
    train_sizes: list[int] | None,
    seeds: list[int] | None,
    grid_index: int | None,
    print_config: bool,
    tuning_request: tuple[dict[str, list[Any]], list[int]] | None = None,
) -> int:
    """Every (train size, augment, seed) cell as its own run under --output ROOT, then the summary files.

    With candidate lists (`tuning_request`: candidates per option, tune seeds) the tuning cells run first,
    in ROOT/tuning/, and each arm's final cells run the candidate it chose on validation (ablation.tuning).
    Grid indices name the tuning cells first, then the final cells.
    """
    from lightning_genae.ablation import plan_grid
    from lightning_genae.ablation.tuning import plan_tuning

    shared = merge(values, {})
    plan = plan_grid(shared, augments=augments, train_sizes=train_sizes, seeds=seeds, grid_index=grid_index)
    tuning = plan_tuning(shared, plan, *tuning_request) if tuning_request is not None else None
    if grid_index is not None:
        # Before grid.json or the root is written: a refused start leaves nothing.
        _check_grid_index(grid_index, plan, tuning)
    for resolved in list(plan.runs.values())[:1]:
        # The cells share their data options: one check stands for all, before the grid writes anything.
        _check_shape_options(resolved)
    if print_config:
        _print_grid_configs(plan, tuning)
        return 0
    _quiet_lightning()
    return _train_grid(shared, plan, tuning, grid_index, overwrite=bool(values.get("overwrite")))


def _check_grid_index(grid_index: int, plan: GridPlan, tuning: TuningPlan | None) -> None:
    """Refuse a --grid-index that names no cell; a tuning grid's indices name its tuning cells first."""
    from lightning_genae.ablation import check_grid_index

    if tuning is None:
        check_grid_index(grid_index, len(plan.cells))
        return
    first_final = len(tuning.cells)
    total = first_final + len(plan.cells)
    if not 0 <= grid_index < total:
        raise ConfigError(
            f"--grid-index {grid_index} is out of range; this tuning grid has {first_final} tuning cells "
            f"(0..{first_final - 1}) and then {len(plan.cells)} final cells ({first_final}..{total - 1})"
        )


def _print_grid_configs(plan: GridPlan, tuning: TuningPlan | None) -> None:
    """--print-config of a grid: every cell's configuration under its index, tuning cells first; a tuned
    arm's final cell is known only once its tuning cells have run."""
    if tuning is not None:
        for index, cell in enumerate(tuning.cells):
            print(f"# cell {index}: {tuning.folder.name}/{cell.name}")
            sys.stdout.write(tuning.runs[cell].config.to_yaml())
    first_final = len(tuning.cells) if tuning is not None else 0
    for index, cell in enumerate(plan.cells, start=first_final):
        arm = tuning.arm_of(cell) if tuning is not None else None
        if arm is not None and len(arm.candidates) > 1:
            print(
                f"# cell {index}: {cell.name} (runs the best of its {len(arm.candidates)} candidates "
                "on validation, once its tuning cells have run)"
            )
            continue
        print(f"# cell {index}: {cell.name}")
        sys.stdout.write(plan.runs[cell].config.to_yaml())


def _cell_runner(runs: dict[GridCell, ResolvedRun]) -> Callable[[GridCell, Path, CellStart], None]:
    """How a grid trains one cell: fresh, resumed from its last.ckpt (only with the cell's own options), or
    restarted over its old files. `runs` is read when a cell starts, so cells added to it later run too."""
    from lightning_genae.ablation import CellStart
    from lightning_genae.checkpoint import RunCheckpoint
    from lightning_genae.run_folder import RunFolderRefused
    from lightning_genae.train import run

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        resolved = runs[cell]
        resume = None
        if start is CellStart.RESUME:
            resume = RunCheckpoint.to_resume("last", str(run_dir))
            conflicts = resume_conflicts(resume.stored_config("--resume"), resolved.config.to_dict())
            if conflicts:
                raise RunFolderRefused(
                    f"{run_dir} holds an unfinished run with other options ({'; '.join(conflicts)}); "
                    "re-run the grid with --overwrite or another --output"
                )
        elif start is CellStart.RESTART:
            resolved = replace(resolved, config=replace(resolved.config, overwrite=True))
        run(resolved, resume=resume)

    return run_cell


def _train_grid(
    shared: RunConfig, plan: GridPlan, tuning: TuningPlan | None, grid_index: int | None, overwrite: bool
) -> int:
    """Run the grid's cells (all, or `grid_index` alone), tuning cells first; 1 if any failed or waits."""
    from lightning_genae.ablation import record_grid_cells, run_grid

    runs = {**plan.runs, **(tuning.runs if tuning is not None else {})}
    run_cell = _cell_runner(runs)
    outcomes: list[CellOutcome] = []
    cells, final_index = plan.cells, grid_index
    not_run: dict[str, str] = {}
    if tuning is not None:
        if grid_index is None or grid_index < len(tuning.cells):
            outcomes += _run_tuning_cells(plan, tuning, run_cell, grid_index, overwrite)
            if grid_index is not None:
                return 1 if any(not outcome.ok for outcome in outcomes) else 0
        cells, chosen_runs, not_run, final_index = _final_cells_after_tuning(shared, plan, tuning, grid_index)
        runs.update(chosen_runs)
    plan.root.mkdir(parents=True, exist_ok=True)
    record_grid_cells(plan.root, plan.cells)
    configs = {cell: runs[cell].config for cell in cells if cell in runs}
    outcomes += run_grid(cells, plan.root, run_cell, final_index, overwrite=overwrite, configs=configs)
    _report_grid(plan.root, grid_index)
    # With --grid-index only the cell asked for counts: another arm still waiting for its tuning is not this
    # array task's failure (SLURM would mark it failed).
    waiting = bool(not_run) and grid_index is None
    return 1 if waiting or any(not outcome.ok for outcome in outcomes) else 0


def _run_tuning_cells(
    plan: GridPlan,
    tuning: TuningPlan,
    run_cell: Callable[[GridCell, Path, CellStart], None],
    grid_index: int | None,
    overwrite: bool,
) -> list[CellOutcome]:
    """Stage 1: the candidates, on validation only (all tuning cells, or `grid_index` alone)."""
    from lightning_genae.ablation import describe_progress, record_grid_cells, run_grid

    plan.root.mkdir(parents=True, exist_ok=True)
    record_grid_cells(plan.root, plan.cells)
    tuning.folder.mkdir(parents=True, exist_ok=True)
    record_grid_cells(tuning.folder, tuning.cells)
    configs = {cell: resolved.config for cell, resolved in tuning.runs.items()}
    outcomes = run_grid(
        tuning.cells, tuning.folder, run_cell, grid_index, overwrite=overwrite, configs=configs
    )
    print(f"tuning: {describe_progress(tuning.folder)}")
    if grid_index is not None:
        first_final, total = len(tuning.cells), len(tuning.cells) + len(plan.cells)
        print(
            f"tuning cell {grid_index} done; once tuning cells 0..{first_final - 1} have run, "
            f"run the final cells {first_final}..{total - 1}"
        )
    return outcomes


def _final_cells_after_tuning(
    shared: RunConfig, plan: GridPlan, tuning: TuningPlan, grid_index: int | None
) -> tuple[list[GridCell], dict[GridCell, ResolvedRun], dict[str, str], int | None]:
    """Stage 2: each arm's choice, made on the validation numbers alone, with the grid's seeds.

    Returns the final cells to run, the runs of the chosen candidates, the cells whose arm cannot run (with
    why), and `grid_index` as an index into the final cells. Writes tuning.json.
    """
    from lightning_genae.ablation.tuning import choose, final_cells, write_tuning_record

    first_final = len(tuning.cells)
    choices = choose(tuning)
    cells, chosen_runs, not_run = final_cells(shared, plan, choices)
    final_index = grid_index
    if grid_index is not None:
        final_index = grid_index - first_final
        problem = not_run.get(cells[final_index].name)
        if problem is not None:
            raise ConfigError(
                f"--grid-index {grid_index} is the final cell {cells[final_index].name}, whose arm "
                f"cannot run: {problem}; run (or re-run) the tuning cells 0..{first_final - 1} first"
            )
    else:
        cells = [cell for cell in cells if cell.name not in not_run]
        for name, problem in not_run.items():
            print(f"{name} not run: {problem}", file=sys.stderr, flush=True)
    plan.root.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_tuning_record(tuning, choices, sorted({cell.seed for cell in plan.cells}))}")
    return cells, chosen_runs, not_run, final_index


def _report_grid(root: Path, grid_index: int | None) -> None:
    """The summary files once the whole grid has run (an array task leaves them to --summarize), and the
    grid's progress."""
    from lightning_genae.ablation import describe_progress, summarize

    if grid_index is None:
        paths = summarize(root)
        print("wrote " + ", ".join(str(path) for path in paths.values()))
    else:
        print(f"cell {grid_index} done; once every cell has run: python run.py --summarize {root}")
    print(describe_progress(root))


if __name__ == "__main__":
    sys.exit(main())
