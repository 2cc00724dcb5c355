"""`python run.py` / `genae`: the command line, generated from RunConfig.

Precedence: RunConfig defaults < resumed checkpoint's configuration < `--config FILE` < command line.

Lightning is imported only by what trains, evaluates or reads a checkpoint (imports inside the functions
below): `--help`, `--version`, `--print-config` and every configuration error answer without it, in about
the time `import torch` takes (tests/experiment/test_startup.py, bench/startup.py).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_genae.cluster import RunInterrupted, current_job, global_rank
from lightning_genae.errors import ConfigError, GenaeError, UnreadOptions, agree
from lightning_genae.experiment.ablation.tuning import (
    check_tuning_request,
    split_candidates,
)
from lightning_genae.experiment.arguments import (
    build_parser,
    command_line_values,
    config_file_values,
    split_list,
)
from lightning_genae.experiment.config import (
    RunConfig,
    merge,
    print_configuration,
)
from lightning_genae.experiment.grid_command import run_grid_command
from lightning_genae.experiment.pipes import ReaderWatch, reader_may_leave
from lightning_genae.experiment.plugin_checks import check_registered_options
from lightning_genae.experiment.program import (
    CommandLineParser,
    continued_as_a_grid,
    error_text,
    os_error_line,
)
from lightning_genae.experiment.resolve import (
    ResolvedRun,
    check_shape_options,
    named_options,
    resolve,
    without_a_likelihood_of_grey_pixels,
)
from lightning_genae.experiment.run_folder import (
    check_output_folder,
    put_back_a_stopped_overwrite,
    set_aside_run_in,
)
from lightning_genae.plugin_options import flag
from lightning_genae.plugins import load_plugins

if TYPE_CHECKING:
    from lightning_genae.checkpoint import RunCheckpoint


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input, 1 training failure).

    The command's one border (`_main`): every GenaeError and OSError met below it is one line, `error: ...`,
    and its exit code; the library below raises them in Python's terms, and an OptionError's option is
    printed as its flag here."""
    with reader_may_leave() as watch:
        try:
            return _main(argv, watch)
        except KeyboardInterrupt:
            # Ctrl-C where no handler of a run's own listens: while the command is read and the libraries
            # load (nothing is written yet), or at a run's very start or end (its start undone, or its
            # files complete). Python would print a traceback of whatever was importing.
            print("stopped by Ctrl-C", file=sys.stderr)
            return 128 + signal.SIGINT


def _augment_arms(args: dict[str, Any], file_values: dict[str, Any]) -> list[str] | None:
    """The --augment value (the command line's, else the --config file's) as a grid's arms; a single arm
    written with a stray comma (`ae,`) is set back as that arm, as `--train-size 100,` is 100."""
    value = args.get("augment", file_values.get("augment"))
    if value is None:
        return None
    arms = split_list(str(value))
    if not arms:
        raise ConfigError(
            f"--augment {str(value)!r} names no augmentation; give one (none, ae, ...), or a comma list of a "
            "grid's arms"
        )
    if len(arms) == 1 and str(value) != arms[0]:
        (args if args.get("augment") is not None else file_values)["augment"] = arms[0]
    return arms


def _main(argv: Sequence[str] | None, watch: ReaderWatch) -> int:
    training = False
    try:
        # Before the parser: a plug-in's names are choices of --model, --data and --augment.
        load_plugins()
        check_registered_options()
        parser = build_parser()
        args = command_line_values(parser, argv)
        config_path = args.pop("config", None)
        print_config = args.pop("print_config", False)
        checkpoint_to_evaluate = args.pop("evaluate", None)
        folder_to_evaluate = args.pop("evaluate_folder", None)
        summarize_root = args.pop("summarize", None)
        seeds = args.pop("seeds", None)
        grid_index = args.pop("grid_index", None)
        train_sizes = args.pop("train_size", None)
        tune_seeds = args.pop("tune_seeds", None)
        # Anything but printing the configuration writes a folder that holds what stdout would have shown.
        watch.note = not print_config
        args, file_values, candidates = _read_inputs(parser, args, config_path, tune_seeds)
        sizes_in_file = file_values.pop("train_size", None)
        if sizes_in_file is not None and len(sizes_in_file) == 1:
            file_values["train_size"] = sizes_in_file[0]
        elif train_sizes is None:
            # A list in the file (`train_size: [1000, full]`) is the grid --train-size 1000,full is; the
            # command line's --train-size replaces it.
            train_sizes = sizes_in_file
        if checkpoint_to_evaluate is not None or folder_to_evaluate is not None:
            not_evaluating = {
                "print_config": print_config or None,
                "seeds": seeds,
                "grid_index": grid_index,
                "tune_seeds": tune_seeds,
                "train_size": train_sizes if train_sizes is not None and len(train_sizes) > 1 else None,
            }
            return _evaluate(
                checkpoint_to_evaluate,
                folder_to_evaluate,
                args,
                file_values,
                config_path,
                train_sizes,
                [name for name, value in not_evaluating.items() if value is not None],
            )
        if summarize_root is not None:
            others = {
                "config": config_path,
                "seeds": seeds,
                "grid_index": grid_index,
                "train_size": train_sizes,
                "tune_seeds": tune_seeds,
            }
            typed = [*args, *(name for name, value in others.items() if value is not None)]
            return _summarize(Path(summarize_root), typed + ["print_config"] * print_config)
        augments = _augment_arms(args, file_values)
        if _is_grid(augments, train_sizes, seeds, grid_index, tune_seeds):
            values = {**_without_options_of_what_the_command_line_replaced(file_values, args), **args}
            tuning = (candidates, tune_seeds) if tune_seeds is not None else None
            with continued_as_a_grid(sys.argv[1:] if argv is None else argv):
                named = named_options(args)
                return run_grid_command(
                    values, augments, train_sizes, seeds, grid_index, print_config, tuning, named
                )
        resolved, resume = _resolve_single_run(args, file_values, train_sizes, may_write=not print_config)
        if print_config:
            check_shape_options(resolved)
            # As config.yaml records it: without what belongs to one invocation (--output, --overwrite,
            # --resume), so the printed file used as --config starts a run of its own.
            print_configuration(resolved.config.with_absolute_paths().experiment().to_yaml())
            return 0
        _quiet_lightning()
        from lightning_genae.experiment.train import run

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
    except OSError as error:
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    return 0


def _read_inputs(
    parser: CommandLineParser, args: dict[str, Any], config_path: str | None, tune_seeds: list[int] | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """The command line's values, the config file's, and the candidate lists of a tuning grid, checked
    before any mode reads them."""
    file_values = config_file_values(parser, config_path) if config_path else {}
    # Candidate lists of tunable options leave the values: only a tuning grid takes them.
    file_values, file_candidates = split_candidates(file_values)
    args, candidates = split_candidates(args)
    candidates = {**{k: v for k, v in file_candidates.items() if k not in args}, **candidates}
    check_tuning_request(candidates, tune_seeds)
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
    train_sizes: list[int | None] | None,
    not_evaluating: list[str],
) -> int:
    """`--evaluate CKPT` or `--evaluate-folder DIR`: measure a saved run, or a folder of images.
    `not_evaluating`: options given that belong to other modes (a grid's, --print-config), refused rather
    than left unread."""
    _quiet_lightning()
    from lightning_genae.experiment.evaluate import evaluate_checkpoint, evaluate_folder
    from lightning_genae.experiment.stopping import stop_at_once_on_signal

    if checkpoint is not None and folder is not None:
        raise ConfigError("--evaluate and --evaluate-folder are separate modes; give one of them")
    if not_evaluating:
        mode = "--evaluate" if checkpoint is not None else "--evaluate-folder"
        flags = ", ".join(flag(name) for name in not_evaluating)
        raise ConfigError(
            f"{mode} measures one {'checkpoint' if checkpoint is not None else 'folder'} and writes its "
            f"eval.json; {flags} {agree(not_evaluating, 'belongs', 'belong')} to training runs and grids: "
            f"drop {agree(not_evaluating, 'it', 'them')}"
        )
    if train_sizes is not None:
        args["train_size"] = train_sizes[0]
    if checkpoint is not None and config_path is not None:
        raise ConfigError("--evaluate takes the run's own settings from the checkpoint; drop --config")
    # eval.json is written whole once the evaluation ends: a stopped one leaves none.
    with stop_at_once_on_signal("during the evaluation; no eval.json was written", "run the command again"):
        if checkpoint is not None:
            _put_back_the_run_of(checkpoint, None)
            evaluate_checkpoint(checkpoint, args)
        else:
            evaluate_folder(folder, args, file_values)
    return 0


def _summarize(root: Path, typed: list[str]) -> int:
    """`--summarize ROOT`: rebuild a grid's summary files from the runs it holds. It reads no other option,
    so one typed beside it (`typed`) is refused rather than silently ignored."""
    from lightning_genae.experiment.ablation import describe_progress, summarize

    if typed:
        flags = ", ".join(flag(name) for name in typed)
        raise ConfigError(f"--summarize reads only the grid's folder; drop {flags}")
    paths = summarize(root)
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    print(describe_progress(root))
    return 0


def _is_grid(
    augments: list[str] | None,
    train_sizes: list[int | None] | None,
    seeds: list[int] | None,
    grid_index: int | None,
    tune_seeds: list[int] | None,
) -> bool:
    """A list of augmentations or train sizes, tuning, or any grid option makes the command a grid."""
    is_grid = len(train_sizes or []) > 1 or len(augments or []) > 1 or tune_seeds is not None
    return is_grid or seeds is not None or grid_index is not None


def _put_back_the_run_of(checkpoint: str, output: str | None) -> None:
    """Before a run folder's checkpoint is read (`--resume last`, `--resume` or `--evaluate` of a file in its
    checkpoints/): the run an --overwrite killed part-way had set aside is put back in its place, and a
    checkpoint inside such a set-aside is refused (what it wrote there would be moved with the run)."""
    if checkpoint == "last" and not output:
        return  # refused where the checkpoint is looked for: there is no folder
    path = Path(checkpoint).expanduser()
    folder = Path(output) if checkpoint == "last" and output else path.parent.parent
    inside = set_aside_run_in(path) if checkpoint != "last" else None
    if inside is not None:
        folder = inside
    put_back_a_stopped_overwrite(folder)
    if inside is not None:
        raise ConfigError(
            f"{checkpoint} lies in the files an --overwrite set aside in {inside}; give the checkpoint in "
            f"{inside / 'checkpoints'}, where the run's files are put back"
        )


def _resolve_single_run(
    args: dict[str, Any],
    file_values: dict[str, Any],
    train_sizes: list[int | None] | None,
    may_write: bool = True,
) -> tuple[ResolvedRun, RunCheckpoint | None]:
    """One run's configuration and the checkpoint it continues from, if any. `may_write`: the command may
    change the run folder (not `--print-config`).

    Precedence: a resumed run's own configuration, then the config file, then the command line.
    """
    if train_sizes is not None:
        args["train_size"] = train_sizes[0]
    resume = None
    if args.get("resume") is not None:
        _quiet_lightning()
        from lightning_genae.experiment.resume import to_resume

        _refuse_a_grids_folder_as_a_run(args["resume"], args.get("output"))
        if may_write:
            # The run an --overwrite killed before it trained had set aside is the one to continue.
            _put_back_the_run_of(args["resume"], args.get("output"))
        resume = to_resume(args["resume"], args.get("output"))
    elif "resume" not in args and (job := current_job()) is not None:
        _quiet_lightning()
        from lightning_genae.experiment.restart import checkpoint_of_restarted_job

        def as_a_fresh_run() -> RunConfig:
            fresh = _without_options_of_what_the_command_line_replaced(file_values, args, say=False)
            return resolve(merge(fresh, args), named=named_options(args)).config

        resume = checkpoint_of_restarted_job(job, merge(file_values, args), as_a_fresh_run)
        if resume is not None and args.get("overwrite"):
            # The job's earlier attempt did the replacing; the run it started is the one to continue.
            args["overwrite"] = False
    base = resume.stored_config("--resume") if resume is not None else {}
    base = without_a_likelihood_of_grey_pixels(base, {**file_values, **args})
    if resume is None:
        file_values = _without_options_of_what_the_command_line_replaced(file_values, args)
    if resume is not None:
        from lightning_genae.experiment.resume import check_resume_options

        check_resume_options(resume, base, {**file_values, **args})
    try:
        return resolve(merge({**base, **file_values}, args), named=named_options(args)), resume
    except UnreadOptions as unread:
        if resume is None:
            raise
        # The refusal's other fix, changing the option that leaves them unread, would make it another run.
        flags = ", ".join(flag(name) for name in unread.names)
        raise ConfigError(
            f"--resume {resume.path}: the run does not read {flags}; drop "
            f"{'it' if len(unread.names) == 1 else 'them'} to continue it"
        ) from unread


def _without_options_of_what_the_command_line_replaced(
    file_values: dict[str, Any], args: dict[str, Any], say: bool = True
) -> dict[str, Any]:
    """The --config file's values less the options of its --model or --augment that the command line
    replaces: those the replacement does not read, and those both read where the file holds the replaced
    family's default and the new family's differs (a gan's lr 5e-4 is no choice for an ae). A run's
    config.yaml records every option of its family and augmentations, and `--config runs/x/config.yaml
    --model ae` is a new run from it, not a mistake. A line names what is left out (`say`)."""
    from lightning_genae.experiment.augment_plan import augmentation_defaults
    from lightning_genae.models import MODELS

    def family_defaults(model: Any) -> dict[str, Any]:
        return MODELS[model].options.parse({}).to_dict() if model in MODELS else {}

    dropped: set[str] = set()
    for key, defaults_of in (("model", family_defaults), ("augment", augmentation_defaults)):
        old, new = file_values.get(key), args.get(key)
        if new is None or old is None or str(new) == str(old):
            continue
        before, after = defaults_of(old), defaults_of(new)
        for name in before:
            if name not in file_values or name in args:
                continue
            unread = name not in after
            left_at_default = not unread and file_values[name] == before[name] != after[name]
            if unread or left_at_default:
                dropped.add(name)
    # Named where the file gave a value: a null there is its default already.
    named = sorted(name for name in dropped if file_values[name] is not None)
    if named and say:
        from lightning_genae.progress import warn

        # On stderr: stdout may be a --print-config being saved as a file.
        warn(
            f"--config: left out {', '.join(map(flag, named))}, the file's options of what the command line "
            "replaced (its --model or --augment), which this run does not read or sets otherwise"
        )
    return {name: value for name, value in file_values.items() if name not in dropped}


def _refuse_a_grids_folder_as_a_run(resume: str, output: str | None) -> None:
    """`--resume last --output ROOT` where ROOT is a grid's folder: name its runs, not a missing last.ckpt."""
    from lightning_genae.run_files import GRID_FILE, last_checkpoint

    if resume != "last" or output is None or not (Path(output) / GRID_FILE).is_file():
        return
    runs = sorted(str(path) for path in Path(output).iterdir() if last_checkpoint(path).is_file())
    example = f" (one of: {', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''})" if runs else ""
    raise ConfigError(
        f"--resume last: {output} is an ablation grid's folder, not a run's; pass --output of one of its "
        f"runs{example}, or run the grid command again, which continues its unfinished runs"
    )


def _error_line(error: GenaeError, training: bool) -> str:
    """The one line an error prints: its message, or on ranks other than 0 before training a pointer to
    rank 0's."""
    if not training and global_rank() != 0:
        # Under SLURM or torchrun every rank reads the same input and raises the same error: rank 0's
        # line is the one copy in the job log.
        return f"rank {global_rank()}: stopped by the error rank 0 reports"
    return error_text(error)


def _quiet_lightning() -> None:
    """Import Lightning (through the console) and silence its noise: called by each mode that trains,
    evaluates or reads a checkpoint, after which Lightning's import has set its loggers' levels."""
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()


if __name__ == "__main__":
    sys.exit(main())
