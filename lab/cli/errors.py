"""Expected failures as one line, with an exit code that says which kind.

exit 2: bad input (a config value, a malformed file, an unknown licence id, a validation error, a missing
path); exit 1: a refused operation (training refused, a broken ledger, a failing audit). Every `lab`
command runs inside `guard` (via `LabTyper`, and around the Hydra task functions): an exception listed in
`KINDS` prints `error: <message>` on stderr (with `--json` / `json=true`: {"ok": false, "error": {...}} on
stdout), anything else prints the same line naming it unexpected. `-v` / `--verbose` (or LAB_VERBOSE=1)
adds the traceback. Exceptions are matched by dotted class name along the MRO, so this module imports
neither torch nor the recipes to classify their errors.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, get_args, get_origin

import typer

from ..util.secrets import redact_text
from .output import print_error

BAD_INPUT, REFUSED = 2, 1

# class (module.qualname) -> (kind, exit code); the most specific class in an exception's MRO wins.
KINDS: dict[str, tuple[str, int]] = {
    # refused operations
    "lab.recipes.train.TrainingRefused": ("training_refused", REFUSED),
    "lab.recipes.base_model.BaseRefused": ("training_refused", REFUSED),
    "lab.checkpoint.lineage.ParentRefused": ("training_refused", REFUSED),
    "lab.data.loader.NothingAdmitted": ("nothing_admitted", REFUSED),
    "lab.train.consent_watch.ConsentStop": ("consent_stop", REFUSED),
    "lab.rights.consent.LedgerBroken": ("ledger_broken", REFUSED),
    "lab.rights.ledger.LedgerError": ("ledger_refused", REFUSED),
    "lab.registry.store.RegistryError": ("registry_refused", REFUSED),
    "lab.cards.signing.SignatureError": ("signature_invalid", REFUSED),
    "lab.catalog.store.CatalogIntegrityError": ("catalog_integrity", REFUSED),
    "lab.data.codes.CodeCacheError": ("code_cache", REFUSED),
    "sqlalchemy.exc.SQLAlchemyError": ("database_error", REFUSED),
    # bad input
    "lab.snapshot.format.SnapshotError": ("bad_snapshot", BAD_INPUT),
    "lab.cards.schema.CardError": ("bad_card", BAD_INPUT),
    "lab.catalog.importers.CatalogError": ("bad_catalog", BAD_INPUT),
    "lab.catalog.store.CatalogNotFoundError": ("not_found", BAD_INPUT),
    "lab.rights.licences.LicenceError": ("bad_licence", BAD_INPUT),
    "lab.rights.ledger.LedgerInputError": ("bad_events", BAD_INPUT),
    "lab.models.musicgen.InvalidModelFolder": ("bad_model", BAD_INPUT),
    "pydantic_core._pydantic_core.ValidationError": ("invalid", BAD_INPUT),
    "hydra.errors.ConfigCompositionException": ("bad_config", BAD_INPUT),
    "hydra.errors.InstantiationException": ("bad_config", BAD_INPUT),
    "omegaconf.errors.OmegaConfBaseException": ("bad_config", BAD_INPUT),
    "sqlalchemy.exc.ArgumentError": ("bad_url", BAD_INPUT),
    "builtins.FileNotFoundError": ("not_found", BAD_INPUT),
    "builtins.NotADirectoryError": ("not_found", BAD_INPUT),
}
UNEXPECTED = ("unexpected", REFUSED)
# typer's own exits and usage errors (typer vendors click as typer._click): theirs to print, not ours
PASS_THROUGH = (typer.Exit, typer.Abort, typer.TyperException, SystemExit, KeyboardInterrupt)

_state = {"verbose": False, "json": False}


def classify(exc: BaseException) -> tuple[str, int]:
    """(kind, exit code) of an exception: its most specific class listed in KINDS, else UNEXPECTED."""
    for cls in type(exc).__mro__:
        found = KINDS.get(f"{cls.__module__}.{cls.__qualname__}")
        if found:
            return found
    return UNEXPECTED


def set_verbose(on: bool) -> None:
    _state["verbose"] = bool(on)


def verbose() -> bool:
    return _state["verbose"] or os.environ.get("LAB_VERBOSE", "").lower() in ("1", "true", "yes")


def set_json(on: bool) -> None:
    """Hydra apps: `json=true` is known only once the config is composed (the task says so)."""
    _state["json"] = bool(on)


def message_of(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """A user-facing message (first line is the summary) and details for the JSON error object."""
    name = type(exc).__name__
    if name == "ValidationError" and hasattr(exc, "errors"):
        errs = exc.errors(include_url=False, include_input=False)
        parts = [f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in errs]
        more = f" (+{len(parts) - 5} more)" if len(parts) > 5 else ""
        title = getattr(exc, "title", "input")
        return f"invalid {title}: {'; '.join(parts[:5])}{more}", {"errors": [_plain(e) for e in errs]}
    module = type(exc).__module__
    if module.startswith(("hydra.", "omegaconf.")):
        text = str(exc).split("\nConfig search path", 1)[0]
        cause = exc.__cause__
        if cause is not None and str(cause) and str(cause) not in text:
            text = f"{text}\n{cause}"
        return _one_line(text), {}
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file or folder: {exc.filename}", {"path": str(exc.filename)}
    text = str(exc) or name
    if classify(exc) is UNEXPECTED:
        text = f"unexpected {name}: {_one_line(text)} (run with -v for the traceback)"
    return text, {}


def _plain(err: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in err.items() if k in ("type", "loc", "msg")}


def _one_line(text: str) -> str:
    """Library messages (Hydra, OmegaConf) span lines: keep them, joined, without the noise."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("object_type=")]
    out = ""
    for ln in lines:
        out = ln if not out else (f"{out} {ln}" if out.endswith((":", ".")) else f"{out}; {ln}")
    return re.sub(r"\s+", " ", out)


def report(exc: BaseException, *, as_json: bool | None = None) -> NoReturn:
    """Print `exc` as the user should see it and exit with its code (SystemExit passes through Hydra)."""
    kind, code = classify(exc)
    if verbose():
        traceback.print_exception(exc, file=sys.stderr)
    message, details = message_of(exc)
    print_error(redact_text(message), kind=kind, as_json=_state["json"] if as_json is None else as_json, **details)
    raise SystemExit(code)


@contextmanager
def guard(*, as_json: bool | None = None) -> Iterator[None]:
    """Run a command body: expected failures become one line and an exit code; exits pass through."""
    try:
        yield
    except PASS_THROUGH:
        raise
    except Exception as exc:  # noqa: BLE001  the one place every failure is turned into a message
        report(exc, as_json=as_json)


def _json_param(fn: Callable) -> str | None:
    """The parameter of a typer command that its `--json` flag fills, if any."""
    for name, p in inspect.signature(fn).parameters.items():
        infos = [p.default]
        if get_origin(p.annotation) is not None:
            infos += list(get_args(p.annotation)[1:])
        elif isinstance(p.annotation, str) and "--json" in p.annotation:
            return name
        for info in infos:
            if "--json" in (getattr(info, "param_decls", None) or ()) or getattr(info, "default", None) == "--json":
                return name
    return None


def guarded(fn: Callable) -> Callable:
    """`fn` (a typer command) run inside `guard`, with its own `--json` flag deciding the error format."""
    flag = _json_param(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with guard(as_json=bool(kwargs.get(flag)) if flag else None):
            return fn(*args, **kwargs)

    return run


class LabTyper(typer.Typer):
    """A Typer whose every command runs inside `guard` (one wrapper for all, no try/except per command)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(fn: Callable) -> Callable:
            register(guarded(fn))
            return fn

        return decorator


def usage_error(exc: typer.TyperException, argv: list[str]) -> NoReturn:
    """A usage error (missing argument, bad option value) as one line, exit 2."""
    hint = ""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(exc, "exit_code", 1) == BAD_INPUT:
        hint = f" (see `{ctx.command_path} --help`)"
    print_error(redact_text(exc.format_message()) + hint, kind="usage", as_json="--json" in argv)
    raise SystemExit(exc.exit_code)
