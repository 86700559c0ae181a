"""What every command shares: the consoles, the progress bar, argument types and the ONE error
handler.

A user's mistake (a bad option, a file that is not what the command needs, a configuration the
library refuses with an :class:`~alertbench.errors.AlertbenchError`) is reported as one line,
``alertbench: error: ...`` on stderr, with exit status 2, whether argparse or the library found
it; a traceback there would read as a bug in alertbench. Anything else is a bug, or a failure
the user cannot fix from the command line, and keeps its traceback so it can be reported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from alertbench.errors import AlertbenchError, ConfigError
from alertbench.redaction import redact_text

console = Console(stderr=True)
"""Progress and announcements: stderr, so stdout holds only what a script would read."""
out = Console(width=None if sys.stdout.isatty() else 120)  # tables stay readable in logs
"""Results: stdout."""

PROG = "alertbench"
USAGE_ERROR = 2
"""Exit status for a user's mistake (argparse's own convention)."""
INTERRUPTED = 130


def progress() -> Progress:
    """The one progress bar every long command shows, on stderr and only to a person at a
    terminal: in a log or a pipe its last frame would be noise around the results (and around
    the one line of an error)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("alerts"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


# --------------------------------------------------------------------------- errors


def error_line(message: str) -> str:
    """``alertbench: error: MESSAGE`` on one line, whatever the message's own line breaks."""
    return f"{PROG}: error: {' '.join(message.split())}"


def fail(message: str) -> int:
    """Print a user's mistake as one line on stderr; the exit status to return."""
    # Plain print, not rich: rich would wrap a long message at the terminal's width and read
    # square brackets in it ("[avro-ocf] ...") as markup.
    # A message may quote a transport URL, and a URL may carry a password.
    print(error_line(redact_text(message)), file=sys.stderr, flush=True)
    return USAGE_ERROR


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are the same one line as the library's.

    argparse prints the usage and then the error; here a mistake in any sub-command raises
    ConfigError naming the command, so :func:`run` reports it like every other mistake.
    Sub-parsers are made of this class too (argparse uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        raise ConfigError(f"{where}{message} (see '{self.prog} --help')")


def run(build: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with the parser ``build`` makes and run the chosen command.

    The one place errors become exit statuses: AlertbenchError (ConfigError included, and
    every argparse mistake through :class:`Parser`) -> one line, 2; Ctrl-C -> 130; anything
    else propagates with its traceback.
    """
    try:
        args = build().parse_args(argv)
        return int(args.func(args))
    except AlertbenchError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED


# --------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """A count that must be at least 1 (``--limit``, ``--visits``, ``--alerts``, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def output_folder(text: str) -> Path:
    """A run's folder (results.json, report.md, plots): anything but an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; give a folder for the run")
    return path


def non_negative_float(text: str) -> float:
    """A duration where 0 means "none" (``--end-to-end-seconds 0``: leave that layer out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or above, got {text}")
    return value


def positive_float(text: str) -> float:
    """A duration or a rate that must be above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def existing_file(text: str) -> Path:
    """A file to read: it must exist and be a file (not a folder)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    return path


def output_file(text: str) -> Path:
    """A file to write: anything but an existing folder (its parents are made)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name to write")
    return path


def existing_folder(text: str) -> Path:
    """A folder to read (``report``'s run folder)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a folder")
    return path


def transport_kind(*, interprocess: bool | None = None) -> Callable[[str], str]:
    """A registered transport kind (``tcp``, ``kafka``, ...), checked when parsed so a URL or a
    typo gets the registry's did-you-mean, not a traceback from deep in a run."""
    from alertbench.transports.base import kinds, transport_class

    def check(text: str) -> str:
        if "://" in text:
            raise argparse.ArgumentTypeError(
                f"{text!r} is a URL; this command starts its own stream, so give a transport "
                f"kind: {', '.join(kinds(interprocess=interprocess))}"
            )
        try:
            transport_class(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if text not in kinds(interprocess=interprocess):
            raise argparse.ArgumentTypeError(
                f"{text!r} cannot run here (its publisher and subscribers share one process); "
                f"choose from {', '.join(kinds(interprocess=interprocess))}"
            )
        return text

    check.__name__ = "transport kind"  # argparse names the type in its messages
    return check


INTERNAL = frozenset({"func", "inside_namespace"})
"""Namespace entries that are plumbing (the handler, how a command re-ran itself), not options."""


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """A command's resolved options, as recorded in its results (paths as text; secrets are
    redacted by the results writer)."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in sorted(vars(args).items())
        if key not in INTERNAL
    }
