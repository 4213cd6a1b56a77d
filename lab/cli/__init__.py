"""The `lab` command. Each concern registers its own sub-app; Hydra apps take raw overrides."""

from __future__ import annotations

import os
import sys

import typer

from ..util.secrets import redact_log_records
from .errors import LabTyper, set_verbose, usage_error

app = LabTyper(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show the traceback of a failure (LAB_VERBOSE=1)."),
) -> None:
    set_verbose(verbose)


def _register() -> None:
    from . import catalog, rights  # noqa: F401  (each module adds itself to `app`)

    names = ("hydra_apps", "demo", "audit", "card", "registry", "impact", "licences", "outputs_verify", "outputs")
    for name in (*names, "serve", "royalties"):
        try:
            __import__(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name != f"{__name__}.{name}":
                raise


# lab never downloads weights or data (a base model is a local folder you declare): the Hugging Face
# libraries are told so before they load, and answer from local files or fail instead of fetching.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> None:
    """Entry point: failures inside a command are one line (lab.cli.errors); so are usage errors here."""
    args = list(argv if argv is not None else sys.argv[1:])
    offline()
    redact_log_records()
    _register()
    try:
        rv = typer.main.get_command(app).main(args=args, prog_name="lab", standalone_mode=False)
    except typer.TyperException as exc:
        usage_error(exc, args)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
