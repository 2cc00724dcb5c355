"""A command whose output's reader goes away (`python run.py ... | head`, a killed `tee`) goes on: while
`reader_may_leave` is active, a write to a closed stdout or stderr goes to os.devnull instead of raising
BrokenPipeError mid-training.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class _StreamWithoutReader:
    """`stream`, except that once its reader is gone its descriptor points at os.devnull, and
    `on_reader_gone(name)` is called once."""

    def __init__(self, stream: TextIO, name: str, on_reader_gone: Any) -> None:
        self._stream = stream
        self._name = name
        self._on_reader_gone = on_reader_gone
        self.reader_gone = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        if self.reader_gone:
            return
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError):
            # What is still in the stream's buffer goes to os.devnull at the next flush.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        self._on_reader_gone(self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ReaderWatch:
    """What `reader_may_leave` yields: set `note` once the command writes a folder, so that the first closed
    stream is reported in one line on the other."""

    note = False


@contextlib.contextmanager
def reader_may_leave() -> Iterator[ReaderWatch]:
    """While active, a closed stdout or stderr pipe does not stop the command."""
    streams: dict[str, _StreamWithoutReader] = {}
    watch = ReaderWatch()

    def reader_gone(name: str) -> None:
        other = streams["stderr" if name == "stdout" else "stdout"]
        if watch.note and not other.reader_gone and sum(s.reader_gone for s in streams.values()) == 1:
            other.write(
                f"note: nothing reads this command's {name} any more (its pipe closed); it goes on without "
                "printing there, and writes its results to its folder as always\n"
            )
            other.flush()

    original_stdout, original_stderr = sys.stdout, sys.stderr
    streams["stdout"] = _StreamWithoutReader(original_stdout, "stdout", reader_gone)
    streams["stderr"] = _StreamWithoutReader(original_stderr, "stderr", reader_gone)
    sys.stdout, sys.stderr = streams["stdout"], streams["stderr"]  # type: ignore[assignment]
    try:
        yield watch
    finally:
        sys.stdout, sys.stderr = original_stdout, original_stderr
