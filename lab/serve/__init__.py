"""`lab serve`: one local web page over checkpoints, cards, audits, impact, sampling and royalties.

Server-rendered (FastAPI + Jinja2), offline (no CDN, no script needed to read a page), read-only
except POST /sample. Every handler calls the function the CLI calls; the pages only arrange results.
"""

from __future__ import annotations

from .app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
