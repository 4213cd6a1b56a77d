"""Human tables or --json, and errors that name what went wrong and exit non-zero."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..util.secrets import redact_text

console = Console()
err_console = Console(stderr=True)


def emit_json(obj: Any) -> None:
    """JSON on stdout; a URL's password never reaches it (lab.util.secrets)."""
    sys.stdout.write(redact_text(json.dumps(obj, indent=2, default=str, sort_keys=True)) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=escape(redact_text(title)))
    for c in columns:
        t.add_column(c, overflow="fold")  # ids and paths wrap whole, never cut to "…"
    for r in rows:
        t.add_row(*[escape(redact_text(str(v))) for v in r])
    console.print(t)


def print_error(message: str, *, kind: str, as_json: bool = False, **details: Any) -> None:
    """`error: message` on stderr, or {"ok": false, "error": {"kind", "message", **details}} on stdout."""
    if as_json:
        emit_json({"ok": False, "error": {"kind": kind, "message": message, **details}})
    else:
        err_console.print(f"[bold red]error:[/] {escape(redact_text(message))}", soft_wrap=True)


def fail(message: str, code: int = 1, as_json: bool = False, *, kind: str | None = None, **details: Any) -> NoReturn:
    """Stop a command: exit 1 for a refused operation, 2 for bad input (lab.cli.errors says which is which)."""
    from .errors import verbose

    if verbose() and sys.exc_info()[0] is not None:  # -v: the exception this message stands for
        traceback.print_exc()
    print_error(message, kind=kind or ("bad_input" if code == 2 else "refused"), as_json=as_json, **details)
    raise typer.Exit(code)
