"""The `lab` command. Each concern registers its own sub-app; Hydra apps take raw overrides."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _register() -> None:
    from . import catalog, rights  # noqa: F401  (each module adds itself to `app`)
    for name in ("hydra_apps", "demo", "audit", "card", "registry", "impact"):
        try:
            __import__(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name != f"{__name__}.{name}":
                raise


def main(argv: list[str] | None = None) -> None:
    _register()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="lab")
