"""The app factory: `create_app(settings) -> FastAPI`, with the settings every page reads.

Settings are explicit (a pydantic model, `ServeSettings.from_env()` for the CLI) so tests and the
CLI point one app at one lab home, ledger and registry without touching the environment.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

STATIC = Path(__file__).with_name("static")


class ServeSettings(BaseModel):
    """Where the pages read from. URLs may carry a password: pages show them through `redact_url` only."""

    model_config = ConfigDict(frozen=True)

    home: Path
    experiments: Path
    ledger_url: str
    registry_url: str
    public_key: Path
    sample_out: Path | None = None  # where POST /sample writes outputs (default: the recipe's own)

    @classmethod
    def from_env(cls, *, ledger_url: str | None = None, registry_url: str | None = None) -> ServeSettings:
        """lab.settings (LAB_HOME, LAB_EXPERIMENTS, LAB_LEDGER_URL, LAB_REGISTRY_URL), as the CLI resolves them."""
        from lab import settings
        from lab.cards.signing import PUBLIC_KEY_NAME

        return cls(
            home=settings.lab_home(),
            experiments=settings.experiments_root(),
            ledger_url=ledger_url or settings.ledger_url(),
            registry_url=registry_url or settings.registry_url(),
            public_key=settings.keys_dir() / PUBLIC_KEY_NAME,
        )


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The web app over `settings` (default: the environment's lab)."""
    from .routes import checkpoints, common, impact, royalties, sample

    settings = settings or ServeSettings.from_env()
    app = FastAPI(title="lab", docs_url=None, redoc_url=None, openapi_url=None)  # pages, not an API
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (checkpoints, impact, sample, royalties):
        app.include_router(module.router)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return common.error_page(request, exc.status_code, str(exc.detail))

    for kind, status in common.EXPECTED_ERRORS:
        app.add_exception_handler(kind, common.expected_error_handler(status))
    return app
