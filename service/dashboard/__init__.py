"""The web dashboard: static HTML, CSS and vanilla JS served under /dashboard/, no build step.

The pages hold no data and need no key to load; every number comes from the `/v1` API,
called from the browser with the key the user typed in (kept in localStorage).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.errors import NotFound

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("")
def redirect_dashboard() -> RedirectResponse:
    """Send /dashboard to /dashboard/ so relative asset paths resolve."""
    return RedirectResponse("/dashboard/", status_code=308)


@router.get("/{name:path}")
def get_dashboard_file(name: str) -> FileResponse:
    """Serve one static file of the dashboard (index.html for the root)."""
    try:
        path = (STATIC / (name or "index.html")).resolve()
        found = path.is_relative_to(STATIC.resolve()) and path.is_file() and path.suffix in MEDIA_TYPES
    except (ValueError, OSError):  # a NUL byte ("embedded null byte"), a name too long for the filesystem
        found = False
    if not found:
        raise NotFound(f"no dashboard file {name!r}")
    # no-cache: the browser revalidates, so a deploy is seen at once without stale JS.
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
