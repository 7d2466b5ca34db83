"""The ``stem`` command line (``stem_st.cli:main``). Errors end in one line on stderr and a
non-zero exit: 2 for bad input, 1 for an internal error."""

from __future__ import annotations

import os
import sys

import click
import typer

from ..errors import StemError
from . import predict  # noqa: F401  (registers stem predict and predict-slide)
from .app import app
from .common import console
from .complete import complete_app

app.add_typer(complete_app, name="complete")
#: the order ``stem --help`` lists the commands in: the pipeline's
ORDER = ("prepare", "info", "train", "predict", "predict-slide", "view", "evaluate", "demo")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name or c.callback.__name__))
__all__ = ["app", "main"]


def main() -> None:
    """Entry point: run the app, turning errors into one line and an exit code (2: bad input)."""
    try:
        app(standalone_mode=False)
    except StemError as exc:
        _fail(str(exc), 2)
    except (typer.Exit, click.exceptions.Exit) as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's (typer's copy) usage errors
            _fail(exc.format_message(), 2)
        if os.environ.get("STEM_DEBUG"):
            raise
        _fail(f"{type(exc).__name__}: {exc} (an internal error; set STEM_DEBUG=1 for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    sys.exit(code)
