"""What every page shares: the Jinja2 environment, opening the registry and ledger, error pages.

Every value a template prints passes `redact_text` (Jinja's `finalize`), and so does each error
message: a database password in a URL, an exception or a card never reaches a page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import SQLAlchemyError

from lab.cards.schema import CardError
from lab.rights.ledger import LedgerError
from lab.util.secrets import redact_text, redact_url

from ..app import ServeSettings

# Failures of the stores a page reads: shown as one line, never as a traceback (status code, title).
EXPECTED_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (LedgerError, 503),
    (SQLAlchemyError, 503),
    (CardError, 422),
)


def _finalize(value: Any) -> Any:
    return redact_text(value) if isinstance(value, str) else value


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("lab.serve", "templates"),
        autoescape=select_autoescape(["j2", "html"], default_for_string=True),
        undefined=StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["redact_url"] = redact_url
    env.filters["seconds"] = lambda s: f"{float(s or 0):,.1f}"
    env.filters["share"] = lambda s: f"{float(s):g}"  # float or decimal string
    return Jinja2Templates(env=env)


def settings_of(request: Request) -> ServeSettings:
    return request.app.state.settings


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from `templates/<name>` with the settings (URLs redacted) and the active nav item."""
    s = settings_of(request)
    stores = {"ledger": redact_url(s.ledger_url), "registry": redact_url(s.registry_url)}
    return templates().TemplateResponse(
        request, name, {"stores": stores, "nav": name.split(".")[0], **context}, status_code=status_code
    )


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    return render(request, "error.html.j2", status_code, status=status_code, message=redact_text(message))


def expected_error_handler(status_code: int):
    async def handler(request: Request, exc: Exception) -> HTMLResponse:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return error_page(request, status_code, f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}")

    return handler


@contextlib.contextmanager
def open_registry(settings: ServeSettings) -> Iterator[Any]:
    from lab.registry import Registry

    with Registry(settings.registry_url) as registry:
        yield registry


@contextlib.contextmanager
def open_ledger(settings: ServeSettings) -> Iterator[Any]:
    """The ledger with its signed-head log, as the CLI opens it (lab.rights.heads.open_ledger)."""
    from lab.rights.heads import open_ledger as _open

    ledger = _open(settings.ledger_url, home=settings.home, key_dir=settings.home / "keys")
    try:
        yield ledger
    finally:
        ledger.close()
