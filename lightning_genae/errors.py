"""User-facing errors: each carries one line that names the problem and the fix."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path

# Ends the refusal of an unknown model, dataset, augmentation or option: a plug-in's name is unknown to a
# process that has not loaded the plug-in (a run folder's config.yaml or checkpoint read without it).
PLUGIN_HINT = "(for a plug-in's, put its module in GENAE_PLUGINS)"

# Terminal escape sequences (torch bolds part of its unpickling message): noise in a log, a file or a pipe.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# torch's safe loader advises weights_only=False, which would run whatever the file holds: never passed on.
_UNSAFE_ADVICE = re.compile(r"weights_only", re.IGNORECASE)
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def describe_error(error: BaseException) -> str:
    """`Type: first line of the message`, so a caught exception fits inside a one-line error."""
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    if _UNSAFE_ADVICE.search(text):
        refused = _REFUSED_GLOBAL.search(text)
        what = f"a pickled {refused.group(1)}" if refused else "pickled objects"
        return f"{type(error).__name__}: it holds {what}, which a safe load refuses (nothing in it was run)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    # A first line that ends in a colon introduces what follows (torchvision: "Error downloading x.gz:", then
    # the mirrors tried and the cause): the last line is the cause.
    first = f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return f"{type(error).__name__}: {first}"


def agree(items: Sized, singular: str, plural: str) -> str:
    """The word that agrees with a list in a message: `--a does`, `--a, --b do`."""
    return singular if len(items) == 1 else plural


class GenaeError(ValueError):
    """An error caused by the user's input or environment: one line with `exit_code` at the command line."""

    exit_code = 2

    def naming(self, spell: Callable[[str], str]) -> str:
        """The message with the options it is about spelled by `spell` (the command line's: as flags)."""
        # Not KeyError's str() (UnknownName's): the repr of its argument, quotes and escapes included.
        return ValueError.__str__(self)

    def __str__(self) -> str:
        return self.naming(str)


class ConfigError(GenaeError):
    """Invalid option, value or combination of options."""


class OptionError(ConfigError):
    """One option's value fails its own check, or no option has its name: str() reads `latent_dim must lie
    in [1, inf), got 0`, and the command line prints `option` as its flag."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(option, problem)
        self.option = option
        self.problem = problem

    def naming(self, spell: Callable[[str], str]) -> str:
        return f"{spell(self.option)} {self.problem}"


class UnreadOptions(ConfigError):
    """Options given that the run would leave unread, each with why and its fix (`reasons`): one line giving
    each reason once, naming its options (as flags at the command line)."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        super().__init__(dict(reasons))
        self.reasons = dict(reasons)

    def naming(self, spell: Callable[[str], str]) -> str:
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.reasons.items():
            by_reason.setdefault(reason, []).append(spell(name))
        sentences = [
            f"{first} {reason}" + (f" (the same for {', '.join(others)})" if others else "")
            for reason, (first, *others) in by_reason.items()
        ]
        return ". Also: ".join(sentences)


def refuse_unread(given: Iterable[str], reasons: Mapping[str, str], otherwise: str = "") -> None:
    """Refuse the options of `given` that `reasons` says a run leaves unread (why, and the fix), then, where
    `otherwise` says why, every other one of them (an option its owner does not take)."""
    refused = {name: reasons[name] for name in given if name in reasons}
    if otherwise:
        refused |= {name: otherwise for name in given if name not in reasons}
    if refused:
        raise UnreadOptions(refused)


class UnknownName(OptionError, KeyError):
    """A registry asked for a name it does not hold: one line naming the choices; a KeyError too."""


class RunFolderRefused(ConfigError):
    """The folder is not this invocation's to write: it holds another run, or another run holds its lock (a
    grid reports it without recording the cell as failed)."""


class DataError(GenaeError):
    """Dataset missing, unreadable, corrupt or too small for the requested setting."""


class WriteFailed(GenaeError):
    """A file of the run could not be written: the disk is full, over quota or read-only."""


class RunFolderGone(GenaeError):
    """The run's folder was moved or deleted while the run trained: it cannot write there any more."""

    exit_code = 1

    @classmethod
    def at(cls, run_dir: Path, continue_with: str = "--resume last") -> RunFolderGone:
        """The one line; `continue_with` says how to go on once the folder is back."""
        return cls(
            f"the run folder {run_dir} is gone; put it back and continue with {continue_with}, or start "
            "the run again"
        )


class TrainingDiverged(GenaeError):
    """A loss, weight, buffer or optimizer state became NaN or inf; the run stops, checkpoints all finite."""
