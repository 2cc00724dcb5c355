"""`python run.py` / `genae`. Precedence: RunConfig defaults < resumed checkpoint < `--config FILE` <
command line. Lightning is imported only by what trains, evaluates or reads a checkpoint."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from lightning_genae.cluster import ClusterJob, RunInterrupted, current_job
from lightning_genae.errors import ConfigError, RunFolderRefused
from lightning_genae.experiment.ablation.conflicts import finished_run_conflicts, unfinished_run_conflicts
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
from lightning_genae.experiment.config import GRID_MODES, MODES, RunConfig
from lightning_genae.experiment.grid_command import run_grid_command
from lightning_genae.experiment.overwrite import put_back_a_stopped_overwrite
from lightning_genae.experiment.program import (
    CommandLineParser,
    continued_as_a_grid,
    one_line_border,
    program_name,
    reader_may_leave,
)
from lightning_genae.experiment.resolve import (
    ResolvedRun,
    augmentation_defaults,
    check_shape_options,
    named_options,
    resolve,
)
from lightning_genae.experiment.run_folder import check_output_folder, read_summary
from lightning_genae.plugin_loading import load_plugins
from lightning_genae.plugin_options import flag, typed_flag
from lightning_genae.run_files import CLUSTER_JOB_KEY, last_checkpoint

if TYPE_CHECKING:
    from lightning_genae.checkpoint import RunCheckpoint


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (and `genae prepare`'s) and the command's one border: every GenaeError and OSError met
    below it is one line, `error: ...`, and its exit code (0 ok, 2 bad input, 1 training failure)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["prepare"]:
        from lightning_genae.experiment.classifier import prepare_main

        return one_line_border(lambda: prepare_main(argv[1:], f"{program_name()} prepare"))
    training: list[bool] = []  # set as a run starts training, from when each rank's error is its own
    with reader_may_leave() as watch:
        try:
            return one_line_border(lambda: _main(argv, watch, training), lambda: bool(training))
        except RunInterrupted as stop:
            # Every rank stops; rank 0 alone carries the line to print.
            if str(stop):
                print(str(stop), file=sys.stderr)
            return stop.exit_code
        except KeyboardInterrupt:
            # Ctrl-C where no handler of a run's own listens (while the command is read, say).
            print("stopped by Ctrl-C", file=sys.stderr)
            return 128 + signal.SIGINT


def _augment_arms(args: dict[str, Any], file_values: dict[str, Any]) -> list[str] | None:
    """The --augment value (the command line's, else the --config file's) as a grid's arms; `ae,` is `ae`."""
    value = args.get("augment", file_values.get("augment"))
    if value is None:
        return None
    arms = split_list(str(value))
    if len(arms) == 1 and str(value) != arms[0]:
        (args if args.get("augment") is not None else file_values)["augment"] = arms[0]
    return arms


def _main(argv: Sequence[str] | None, watch: SimpleNamespace, training: list[bool]) -> int:
    # Before the parser: a plug-in's names are choices of --model, --data and --augment.
    load_plugins()
    parser = build_parser()
    args = command_line_values(parser, argv)
    print_config = args.pop("print_config", False)
    mode = {name: args.pop(name, None) for name in MODES}
    seeds, grid_index, tune_seeds = mode["seeds"], mode["grid_index"], mode["tune_seeds"]
    train_sizes = args.pop("train_size", None)
    # Anything but printing the configuration writes a folder that holds what stdout would have shown.
    watch.note = not print_config
    args, file_values, candidates = _read_inputs(parser, args, mode["config"], tune_seeds)
    sizes_in_file = file_values.pop("train_size", None)
    if sizes_in_file is not None and len(sizes_in_file) == 1:
        file_values["train_size"] = sizes_in_file[0]
    elif train_sizes is None:
        # A list in the file is a grid, as --train-size 1000,full is; the command line's replaces it.
        train_sizes = sizes_in_file
    grid_options = [name for name in GRID_MODES if mode[name] is not None]
    not_read = grid_options + ["print_config"] * print_config
    if mode["evaluate"] is not None or mode["evaluate_folder"] is not None:
        sizes = ["train_size"] * (train_sizes is not None)
        return _evaluate(mode, args, file_values, not_read + sizes)
    if mode["summarize"] is not None:
        return _summarize(Path(mode["summarize"]))
    augments = _augment_arms(args, file_values)
    if len(train_sizes or []) > 1 or len(augments or []) > 1 or grid_options:
        values = {**_without_options_of_what_the_command_line_replaced(file_values, args), **args}
        tuning = (candidates, tune_seeds) if tune_seeds is not None else None
        with continued_as_a_grid(sys.argv[1:] if argv is None else argv):
            return run_grid_command(
                values, augments, train_sizes, seeds, grid_index, print_config, tuning, named_options(args)
            )
    resolved, resume = _resolve_single_run(args, file_values, train_sizes, may_write=not print_config)
    if print_config:
        check_shape_options(resolved)
        # As config.yaml records it: without what belongs to one invocation (--output, --overwrite,
        # --resume), so the printed file used as --config starts a run of its own.
        print(resolved.config.with_absolute_paths().experiment().to_yaml(), end="", flush=True)
        return 0
    _quiet_lightning()
    from lightning_genae.experiment.train import run

    training.append(True)
    run(resolved, resume=resume, explicit_resume=args.get("resume") is not None)
    return 0


def _read_inputs(
    parser: CommandLineParser, args: dict[str, Any], config_path: str | None, tune_seeds: list[int] | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """The command line's values, the config file's, and the candidate lists of a tuning grid."""
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
    mode: dict[str, Any],
    args: dict[str, Any],
    file_values: dict[str, Any],
    not_evaluating: list[str],
) -> int:
    """`--evaluate CKPT` or `--evaluate-folder DIR`; an option the mode does not read is refused."""
    checkpoint, folder = mode["evaluate"], mode["evaluate_folder"]
    _quiet_lightning()
    from lightning_genae.experiment.evaluate import (
        EVALUATION_OPTIONS,
        FOLDER_EVALUATION_OPTIONS,
        evaluate_checkpoint,
        evaluate_folder,
    )
    from lightning_genae.experiment.trainer import stop_at_once_on_signal

    if checkpoint is not None:
        # The checkpoint holds the run's own settings, so neither --config nor the folder mode applies.
        not_evaluating += [name for name in ("evaluate_folder", "config") if mode[name] is not None]
        unread = not_evaluating + sorted(set(args) - set(EVALUATION_OPTIONS))
        why = "--evaluate takes the run's own settings from the checkpoint"
    else:
        unread = not_evaluating + sorted(set(args) - set(FOLDER_EVALUATION_OPTIONS))
        why = f"--evaluate-folder reads only {', '.join(map(flag, FOLDER_EVALUATION_OPTIONS))}"
    if unread:
        flags = ", ".join(typed_flag(name, args[name]) if name in args else flag(name) for name in unread)
        raise ConfigError(f"{why}; drop {flags}")
    # eval.json is written whole once the evaluation ends: a stopped one leaves none.
    with stop_at_once_on_signal("during the evaluation; no eval.json was written", "run the command again"):
        if checkpoint is not None:
            _put_back_the_run_of(checkpoint, None)
            evaluate_checkpoint(checkpoint, args)
        else:
            evaluate_folder(folder, args, file_values)
    return 0


def _summarize(root: Path) -> int:
    """`--summarize ROOT`: rebuild a grid's summary files from its runs; it reads no other option."""
    from lightning_genae.experiment.ablation import describe_progress, summarize

    paths = summarize(root)
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    print(describe_progress(root))
    return 0


def _put_back_the_run_of(checkpoint: str, output: str | None) -> None:
    """Before a run folder's checkpoint is read: put back the run a killed --overwrite had set aside."""
    if checkpoint == "last" and not output:
        return  # refused where the checkpoint is looked for: there is no folder
    folder = Path(output) if checkpoint == "last" and output else Path(checkpoint).expanduser().parent.parent
    put_back_a_stopped_overwrite(folder)


def _resolve_single_run(
    args: dict[str, Any],
    file_values: dict[str, Any],
    train_sizes: list[int | None] | None,
    may_write: bool = True,
) -> tuple[ResolvedRun, RunCheckpoint | None]:
    """One run's configuration and the checkpoint it continues from; `may_write`: not `--print-config`."""
    if train_sizes is not None:
        args["train_size"] = train_sizes[0]
    resume = None
    if args.get("resume") is not None:
        _quiet_lightning()
        from lightning_genae.experiment.resume import to_resume

        if may_write:
            # The run an --overwrite killed before it trained had set aside is the one to continue.
            _put_back_the_run_of(args["resume"], args.get("output"))
        resume = to_resume(args["resume"], args.get("output"))
    elif "resume" not in args and (job := current_job()) is not None:
        _quiet_lightning()

        def as_a_fresh_run() -> RunConfig:
            fresh = _without_options_of_what_the_command_line_replaced(file_values, args, say=False)
            return resolve(RunConfig.from_dict({**fresh, **args}), named=named_options(args)).config

        resume = checkpoint_of_restarted_job(
            job, RunConfig.from_dict({**file_values, **args}), as_a_fresh_run
        )
        if resume is not None and args.get("overwrite"):
            # The job's earlier attempt did the replacing; the run it started is the one to continue.
            args["overwrite"] = False
    base = resume.stored_config("--resume") if resume is not None else {}
    if resume is None:
        file_values = _without_options_of_what_the_command_line_replaced(file_values, args)
    else:
        from lightning_genae.experiment.resume import check_resume_options

        check_resume_options(resume, base, {**file_values, **args})
    return resolve(RunConfig.from_dict({**base, **file_values, **args}), named=named_options(args)), resume


def checkpoint_of_restarted_job(
    job: ClusterJob, values: RunConfig, as_a_fresh_run: Callable[[], RunConfig]
) -> RunCheckpoint | None:
    """The last.ckpt a requeued SLURM or restarted torchrun job continues from (its default folder, or
    `--output`), never another job's; one naming no job is refused where the job cannot tell whose it is."""
    # Imported here: they import Lightning, which a command that starts no run never needs.
    from lightning_genae.checkpoint import RunCheckpoint
    from lightning_genae.experiment.resume import written_by
    from lightning_genae.experiment.train import default_run_dir

    if values.output:
        if job.restart_count == 0:
            return None
        folder = Path(values.output)
    else:
        if job.restart_count == 0 and not job.identified:
            # torchrun without --rdzv-id: the folder named after the job is every such job's.
            return None
        folder = default_run_dir(as_a_fresh_run())
    path = last_checkpoint(folder)
    if not path.is_file():
        return None
    checkpoint = RunCheckpoint.load(path, "--resume")
    writer = written_by(checkpoint, job)
    if writer != "unknown":
        return checkpoint if writer == "own" else None
    # A checkpoint that names no job, or a job id every torchrun without --rdzv-id shares.
    if values.output and values.overwrite:
        # Compared with the run the folder holds, finished or not (a failed one too), by the checkpoint read.
        summary, fresh = read_summary(folder), as_a_fresh_run()
        if summary is not None:
            conflicts = finished_run_conflicts(summary, fresh, folder)
        else:
            conflicts = unfinished_run_conflicts(checkpoint.stored_config("--resume"), fresh)
        if conflicts:
            return None  # another run's options: the run the --overwrite replaces
    elif job.identified:
        return checkpoint  # it names no job (written outside one, or by an older version): continued
    why = "it names no job" if CLUSTER_JOB_KEY not in checkpoint.contents else "torchrun without --rdzv-id"
    fix = "--resume last, not --overwrite" if values.overwrite else "torchrun --rdzv-id, or --resume last"
    raise RunFolderRefused(
        f"{folder}: this restarted job cannot tell whether {path} is its own ({why}); use {fix}"
    )


def _without_options_of_what_the_command_line_replaced(
    file_values: dict[str, Any], args: dict[str, Any], say: bool = True
) -> dict[str, Any]:
    """The --config file's values less its replaced --model's or --augment's options the new one does not read
    or that hold the old one's default where the new one's differs (a gan's lr is no ae's); `say`: named."""
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
        warn(f"--config: left out {', '.join(map(flag, named))}, not read under this --model/--augment")
    return {name: value for name, value in file_values.items() if name not in dropped}


def _quiet_lightning() -> None:
    """Import Lightning and silence its noise, in each mode that trains, evaluates or reads a checkpoint."""
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()


if __name__ == "__main__":
    sys.exit(main())
