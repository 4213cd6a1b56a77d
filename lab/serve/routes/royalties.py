"""`/royalties`: recorded royalty statements per rights holder (read-only; lab.royalties writes them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .common import render

router = APIRouter()


@router.get("/royalties", response_class=HTMLResponse)
def royalties_page(request: Request):
    return render(request, "royalties.html.j2", available=False, statements=[])
