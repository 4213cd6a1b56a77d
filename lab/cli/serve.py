"""`lab serve [--host 127.0.0.1] [--port 8000]`: the local web page over checkpoints, impact, sampling, royalties."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional

import typer

from . import app

LOCAL = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="address to bind (default: this machine only)")] = LOCAL,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port")] = 8000,
    ledger: Annotated[Optional[str], typer.Option("--ledger", help="ledger URL (default: this lab's)")] = None,
    registry: Annotated[Optional[str], typer.Option("--registry", help="registry URL (default: this lab's)")] = None,
) -> None:
    """Serve the pages (read-only except sampling) until interrupted. The pages have no login: keep the
    default localhost binding unless something in front of it authenticates."""
    import uvicorn

    from ..serve import ServeSettings, create_app

    if not is_loopback(host):
        typer.echo(f"warning: serving on {host}: anyone who can reach it can read every page and sample", err=True)
    settings = ServeSettings.from_env(ledger_url=ledger, registry_url=registry)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", server_header=False)
