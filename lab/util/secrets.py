"""Passwords stay in the process: URLs are rendered with the password hidden wherever a config,
a URL or a message leaves it (checkpoints, cards, wandb, logs, CLI output, Hydra's saved config).

A database URL is the one secret a lab config carries (`ledger_url`, `registry_url`); the password
is needed to connect and nowhere else, so everything written out gets `redact_url`'s rendering.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

HIDDEN = "***"

# scheme://user:password@ — the password is whatever lies between the first ':' after the user and the last '@'
# before the host (SQLAlchemy's own parse), so a password with '@' or ':' is hidden whole.
_URL_WITH_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<pw>[^\s'\"]*)(?P<at>@)")


def redact_url(url: str) -> str:
    """`url` with its password shown as ***; text that is not a URL with a password comes back unchanged."""
    if "://" not in url or "@" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return redact_text(url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def redact_text(text: str) -> str:
    """Every `scheme://user:password@` in free text (messages, logs, JSON) with the password as ***."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_WITH_PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}{m['at']}", text)


def redact_config(obj: Any) -> Any:
    """A copy of a plain config (dicts, lists, scalars) with every URL password hidden."""
    if isinstance(obj, str):
        return redact_url(obj)
    if isinstance(obj, Mapping):
        return {k: redact_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_config(v) for v in obj)
    return obj


def secret_urls(obj: Any) -> dict[str, str]:
    """{url: its redacted rendering} for every string in `obj` that is a URL carrying a password."""
    found: dict[str, str] = {}

    def walk(v: Any) -> None:
        if isinstance(v, str):
            shown = redact_url(v)
            if shown != v:
                found[v] = shown
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(obj)
    return found


def scrub_text(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with each secret URL replaced by its redacted rendering, then any other URL password hidden."""
    for url, shown in sorted(secrets.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(url, shown)
    return redact_text(text)


class _Redacting:
    """Log record factory that hides URL passwords in the formatted message (every logger, every handler)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        if isinstance(record.msg, str) and ("://" in record.msg or record.args):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001  a bad format string is logging's to report, not ours
                return record
            shown = redact_text(message)
            if shown != message:
                record.msg, record.args = shown, None
        return record


def redact_log_records() -> None:
    """Hide URL passwords in every log record from now on (idempotent; process-wide)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _Redacting):
        logging.setLogRecordFactory(_Redacting(factory))
