"""One text form for instants, so that string order is time order (SQL columns, pyarrow filters)."""

from __future__ import annotations

from datetime import datetime, timezone

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime: lab stores UTC instants only")
    return value.astimezone(timezone.utc).strftime(FORMAT)


def from_ts(text: str) -> datetime:
    return datetime.strptime(text, FORMAT).replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
