"""Human tables or --json, and errors that name what went wrong and exit non-zero."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, sort_keys=True) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=escape(title))
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[escape(str(v)) for v in r])
    console.print(t)


def fail(message: str, code: int = 1, as_json: bool = False, **extra: Any) -> NoReturn:
    if as_json:
        emit_json({"ok": False, "error": message, **extra})
    else:
        err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)
