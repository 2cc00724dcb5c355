"""A Python script run in a forked child of the test process, as `python -c SOURCE ARGS`, `python FILE ARGS`
or `python -m NAME ARGS` would run it, without a new interpreter's start-up: the child has the libraries
already imported, so a tiny run in it costs its own work (under a second) where a new process first spends
about 8 s of CPU on imports. Its patches, signal handlers, stdout, stderr and exit status are its own, as a
subprocess's are.

For tests of what a running process does (its exit status, a signal it takes, the lines it prints, what it
leaves on disk). The child inherits the test process's imported modules and what they hold, so a test of
start-up itself (the libraries loading, an installed command, a piped output), and the ranks of a DDP job,
each of which finds its rank as srun or Lightning starts it, start real subprocesses instead.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import runpy
import signal
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from pathlib import Path


class Module(str):
    """A module's name, run as `python -m NAME`."""


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's own printing of a warning, on stderr."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


class Forked:
    """A forked child running `script` (Python source, a Path to a .py file, or a Module); the calls of
    Popen the tests use (poll, wait, send_signal, kill)."""

    def __init__(
        self,
        script: str | Path | Module,
        arguments: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self._stdout, self._stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.returncode: int | None = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(self._child(script, arguments, env, cwd))
        self.pid = pid

    def _child(
        self, script: str | Path | Module, arguments: list[str], env: dict[str, str] | None, cwd: Path | None
    ) -> int:
        code = 1
        try:
            # A new interpreter's state: the parent's exit handlers and signal handlers are not the child's.
            atexit._clear()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for name in ("SIGTERM", "SIGUSR1", "SIGHUP"):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            # tqdm's write locks are the parent's across the fork, its multiprocessing lock a semaphore both
            # share: fresh ones, so a child killed while writing cannot leave the parent's writes waiting.
            from tqdm.std import TqdmDefaultWriteLock, tqdm

            TqdmDefaultWriteLock.mp_lock = multiprocessing.RLock()
            TqdmDefaultWriteLock.th_lock = threading.RLock()
            kinds = [tqdm]
            while kinds:
                kind = kinds.pop()
                kinds += kind.__subclasses__()
                if "_lock" in vars(kind):
                    kind.set_lock(TqdmDefaultWriteLock())
            # Python's own warning filters and printing, not pytest's (which records warnings).
            warnings.showwarning = _print_warning
            warnings.resetwarnings()
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__", append=True)
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category, append=True)
            os.dup2(self._stdout.fileno(), 1)
            os.dup2(self._stderr.fileno(), 2)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
            sys.stdin = io.TextIOWrapper(open(os.devnull, "rb"))
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            if cwd is not None:
                os.chdir(cwd)
            # The import path's head as a new interpreter's: the script's folder ('' for -c, the working
            # folder for -m), then $PYTHONPATH's entries.
            head = [str(script.resolve().parent) if isinstance(script, Path) else ""]
            head = [os.getcwd()] if isinstance(script, Module) else head
            sys.path[0:0] = [*head, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            if isinstance(script, Path):  # as `python FILE ARGS`
                sys.argv = [str(script.resolve()), *arguments]
                runpy.run_path(sys.argv[0], run_name="__main__")
            elif isinstance(script, Module):  # as `python -m NAME ARGS`
                sys.argv = ["-m", *arguments]
                # The module may be imported in the test process already, which `python -m` never meets; runpy
                # warns of it, and runs it afresh as __main__ all the same.
                warnings.filterwarnings("ignore", "'.*' found in sys.modules after import", RuntimeWarning)
                runpy.run_module(script, run_name="__main__", alter_sys=True)
            else:  # as `python -c SOURCE ARGS`
                sys.argv = ["-c", *arguments]
                main = types.ModuleType("__main__")
                sys.modules["__main__"] = main
                exec(compile(script, "<string>", "exec"), main.__dict__)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if not isinstance(stop.code, int | None):
                print(stop.code, file=sys.stderr)
        except KeyboardInterrupt:
            # As Python ends on a Ctrl-C nothing caught: the traceback, then killed by SIGINT itself.
            traceback.print_exc()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            traceback.print_exc()
            code = 1
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # the exit status stands, as a new interpreter's would
            pass
        return code

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 600) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                self.wait()
                raise TimeoutError(f"the forked child {self.pid} ran past {timeout} s")
            time.sleep(0.05)
        return self.returncode

    def wait_until_printed(self, text: str, timeout: float = 300) -> None:
        """Return once the child has printed `text` on stdout; fail if it ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            assert self.poll() is None, f"the child ended without printing {text!r}: {self.stderr}"
            assert time.monotonic() < deadline, f"the child did not print {text!r} within {timeout} s"
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    @property
    def stdout(self) -> str:
        """What the child printed on stdout so far."""
        self._stdout.seek(0)
        return self._stdout.read().decode(errors="replace")

    @property
    def stderr(self) -> str:
        """What the child printed on stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")


def run_forked(
    script: str | Path | Module,
    arguments: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Forked:
    """Run `script` (Python source, a Path to a .py file, or a Module) with `arguments` in a forked child
    and wait for it; `.returncode` as subprocess.run gives it (minus the signal that ended it), `.stdout`
    and `.stderr` its text."""
    child = Forked(script, arguments, env=env, cwd=cwd)
    child.wait()
    return child
