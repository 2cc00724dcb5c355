"""The command's name, its errors in one line, its parser, and output whose reader may go away."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import errno
import os
import re
import shlex
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import jsonargparse

from lightning_genae.cluster import global_rank
from lightning_genae.errors import ConfigError, GenaeError, describe_error
from lightning_genae.plugin_options import flag

# Set while a grid's cells run: a cell is continued by running the grid's command again (its finished cells
# are skipped, its unfinished ones resume), not by resuming the one cell alone.
_GRID_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("grid_command", default=None)


class CommandLineParser(jsonargparse.ArgumentParser):
    """jsonargparse's parser of typed options, each refusal a ConfigError of one line naming the flag."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(print_config=None, argument_default=argparse.SUPPRESS, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # jsonargparse's and argparse's refusals read `--max-steps: ...`, a union's in one line.
        message = re.sub(r'Parser key "(\w+)":', lambda key: flag(key[1]) + ":", message)
        message = re.sub(r"\bargument (--[\w-]+):", r"\1:", message)
        message = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>|typing\.", r"\1", message)
        union = r"Does not validate .*?Union subtypes\s+Subtypes: \[(.*?)\]\s+Errors:.*Given value: "
        message = re.sub(union, r"Expected one of \1. Got value: ", message, flags=re.DOTALL)
        raise ConfigError(" ".join(message.split()))


# What a full disk, an exhausted quota and a read-only filesystem raise.
_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def one_line_border(command: Callable[[], int], every_rank_reports: Callable[[], bool] = lambda: True) -> int:
    """A command's one border: `command`'s exit code, or every GenaeError and OSError it meets as one line,
    `error: ...`, with its exit code (2 for an OSError, with the way on from a full disk, a quota or a
    read-only folder). Until `every_rank_reports()` (a run trains), every rank of a job meets one error
    alike, and rank 0's line is the one copy in the job log."""
    try:
        return command()
    except GenaeError as error:
        rank = global_rank()
        if rank == 0 or every_rank_reports():
            # The options it is about named as the flags that give them, every line joined into one.
            line = " ".join(error.naming(flag).split("\n"))
        else:
            line = f"rank {rank}: stopped by the error rank 0 reports"
        print(f"error: {line}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        line = describe_error(error)
        if error.errno in _STORAGE_ERRORS:
            line = f"could not write ({line}); free space or make the folder writable, and run it again"
        print(f"error: {line}", file=sys.stderr)
        return 2


def program_name() -> str:
    """`genae`, `python -m lightning_genae` or `run.py`: what usage lines call the command."""
    started = Path(sys.argv[0])
    if started.name == "genae":
        return "genae"
    if started.name == "__main__.py" and started.parent.name == "lightning_genae":
        return "python -m lightning_genae"
    return "run.py"


def command_prefix() -> str:
    """The command as a user types it again: `genae`, `python -m lightning_genae`, else `python run.py`."""
    name = program_name()
    return "python run.py" if name == "run.py" else name


def resume_command(run_dir: str | Path) -> str:
    """The command that continues the run in `run_dir` (within a grid, the grid's own command)."""
    return _GRID_COMMAND.get() or f"{command_prefix()} --output {shlex.quote(str(run_dir))} --resume last"


@contextlib.contextmanager
def continued_as_a_grid(arguments: Sequence[str]) -> Iterator[None]:
    """Within: `resume_command` is the grid command of `arguments` (the command line as typed)."""
    # Without --overwrite: typed again, it would start over the cells this grid has already run.
    kept = [argument for argument in arguments if argument != "--overwrite"]
    token = _GRID_COMMAND.set(f"{command_prefix()} {shlex.join(kept)}")
    try:
        yield
    finally:
        _GRID_COMMAND.reset(token)


class _StreamWithoutReader:
    """`stream`, whose descriptor points at os.devnull once its reader is gone (then `on_gone()` runs)."""

    def __init__(self, stream: TextIO, on_gone: Callable[[], None]) -> None:
        self._stream = stream
        self._on_gone = on_gone
        self.gone = False

    def write(self, text: str) -> int:
        with self._dropped_once_gone():
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with self._dropped_once_gone():
            self._stream.flush()

    @contextlib.contextmanager
    def _dropped_once_gone(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            if not self.gone:
                self.gone = True
                with contextlib.suppress(OSError, ValueError):
                    # What is still in the stream's buffer goes to os.devnull at the next flush.
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, self._stream.fileno())
                    os.close(devnull)
                self._on_gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def reader_may_leave() -> Iterator[types.SimpleNamespace]:
    """Within, a closed stdout or stderr pipe (`run.py ... | head`) writes to os.devnull, not BrokenPipeError
    mid-training; once the command writes a folder (`note`), the first one closed is named on the other."""
    watch = types.SimpleNamespace(note=False)
    original = sys.stdout, sys.stderr

    def reader_gone(name: str, other: _StreamWithoutReader) -> None:
        if watch.note and not other.gone:
            other.write(f"note: nothing reads this command's {name} any more; its results go to its folder\n")
            other.flush()

    out = _StreamWithoutReader(original[0], lambda: reader_gone("stdout", err))
    err = _StreamWithoutReader(original[1], lambda: reader_gone("stderr", out))
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        yield watch
    finally:
        sys.stdout, sys.stderr = original
