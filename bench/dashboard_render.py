"""How long the audit page's unit-map figures take to render once their data has arrived, in Chromium.

The dashboard is loaded from its static files and its /v1 calls are answered from memory (Playwright
routes), so only the browser's work is timed: the page marks ``unitmap-data`` when the arrays and the
zoomed layer have been parsed and measures ``unitmap-render`` after the figures are in the DOM, laid out
and painted (Performance API). Default unit map: the Qwen2.5-0.5B shape (24 layers, 14 heads, 4864
neurons per layer: 117,072 units) with heavy-tailed z-scores labelled by the engine's classifier; or
``--unit-map DIR`` for a real one. Prints ``render_ms=`` (median over runs), ``render_ms_max=``, ``units=``,
and ``server_arrays_ms=``: what the API spends per request (read the stored zip, bin the neurons).

    python bench/dashboard_render.py [--unit-map runs/smollm2-audit] [--runs 5] [--screenshot audit.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STATIC = REPO / "service" / "dashboard" / "static"

from ssah_engine.unitmap_arrays import figure_data, layer_neurons, read_arrays  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


RENDER_BUDGET_MS = 1000.0


def qwen_shaped_map(seed: int = 0):
    """A unit map of the Qwen2.5-0.5B shape: correlated, heavy-tailed z-scores, labelled with the paper's cuts."""
    import torch

    from ssah_engine.classes import Cuts
    from ssah_engine.classify import classify
    from ssah_engine.unitmap import UnitMap
    from ssah_engine.units import UnitSpace

    space = UnitSpace(num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, hidden_size=896, intermediate_size=4864)
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(space.size, generator=generator, dtype=torch.float64)
    other = torch.randn(space.size, generator=generator, dtype=torch.float64)
    z_safety = torch.sinh(1.2 * base) / 1.2
    z_utility = torch.sinh(1.2 * (0.7 * base + 0.7 * other)) / 1.2
    labels = classify(z_safety, z_utility, space.param_weights(), Cuts())
    means = torch.zeros(space.num_layers, 1), torch.zeros(space.num_layers, 1)
    return UnitMap(space, labels, z_safety, z_utility, *means, versions={})


def responses(directory: Path) -> tuple[dict[str, object], int]:
    """The JSON bodies of every /v1 path the audit page asks for, and the number of units."""
    summary = json.loads((directory / "summary.json").read_text())
    created = datetime.fromtimestamp((directory / "summary.json").stat().st_mtime, timezone.utc)
    arrays = read_arrays(directory)
    audit = str(uuid.uuid4())
    scu = [layer["neurons"]["SCU"] for layer in summary["layers"]]
    zoom = scu.index(max(scu))
    base = f"/v1/audits/{audit}"
    bodies: dict[str, object] = {
        base: {
            "id": audit,
            "kind": "audit",
            "status": "succeeded",
            "progress": 1.0,
            "created_at": created.isoformat(),  # when the directory's summary was written
        },
        f"{base}/unit-map": {"classes": summary["classes"], "artifact_available": True},
        f"{base}/unit-map/layers": {"items": summary["layers"], "next": None, "total": len(summary["layers"])},
        f"{base}/unit-map/arrays": {**figure_data(arrays), "job_id": audit, "cut_fractions": {}},
        f"{base}/unit-map/layers/{zoom}/neurons": {**layer_neurons(arrays, zoom), "job_id": audit},
        "/v1/evaluations": {"items": [], "next": None, "total": 0},
        "audit": audit,
    }
    return bodies, int(summary["units"]["total"])


@contextmanager
def audit_page(bodies: dict[str, object]) -> Iterator[Any]:
    """A Chromium page on the dashboard whose /v1 calls ``bodies`` answers; fails on any console error."""
    from playwright.sync_api import Route, sync_playwright

    def answer(route: Route) -> None:
        path = "/" + route.request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
        if path.startswith("/dashboard/"):
            file = STATIC / (path.removeprefix("/dashboard/") or "index.html")
            route.fulfill(body=file.read_bytes(), content_type=MEDIA.get(file.suffix, "application/octet-stream"))
        elif path in bodies:
            route.fulfill(body=json.dumps(bodies[path]), content_type="application/json")
        else:
            route.fulfill(status=404, body="{}", content_type="application/json")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("SSAH_CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.route("**/*", answer)
        page.goto("http://ssah.bench/dashboard/")
        page.evaluate("localStorage.setItem('ssah.apiKey', 'bench')")
        yield page
        browser.close()
    if errors:
        raise SystemExit(f"console errors: {errors}")


def render_ms(page, audit: str) -> float:
    """Load the audit page afresh; the Performance API's measure from the arrays' arrival to painted figures."""
    page.goto(f"http://ssah.bench/dashboard/#/audit/{audit}")
    page.reload()
    page.wait_for_selector("#unit-map-figures[data-state=rendered]", timeout=60_000)
    return page.evaluate("performance.getEntriesByName('unitmap-render')[0].duration")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit-map", type=Path, help="a unit map directory (default: synthetic, Qwen2.5-0.5B shape)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, help="keep a full-page screenshot of the last run")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    directory = args.unit_map or qwen_shaped_map().save(scratch / "unit_map")
    bodies, units = responses(directory)
    # What the API does per request: read the zip it stores (as the worker publishes it), bin the neurons.
    archive = shutil.make_archive(str(scratch / "unit_map"), "zip", directory)
    started = time.perf_counter()
    figure_data(read_arrays(archive))
    arrays_ms = 1000 * (time.perf_counter() - started)
    shutil.rmtree(scratch)  # the synthetic map's files and the zip; the page's answers are in memory
    payload_bytes = len(json.dumps(bodies[f"/v1/audits/{bodies['audit']}/unit-map/arrays"]))
    timings, nodes = [], 0
    with audit_page(bodies) as page:
        for _ in range(args.runs):
            timings.append(render_ms(page, str(bodies["audit"])))
        nodes = page.evaluate("document.querySelectorAll('#unit-map-figures *').length")
        if args.screenshot:
            page.screenshot(path=str(args.screenshot), full_page=True)
    print(
        f"render_ms={statistics.median(timings):.1f} render_ms_max={max(timings):.1f} units={units} "
        f"runs={len(timings)} dom_nodes={nodes} arrays_bytes={payload_bytes} server_arrays_ms={arrays_ms:.1f}"
    )
    # The budget: the figures drawn within 1 s of their data arriving (ratio <= 1 meets it).
    print(f"render_budget_ratio={statistics.median(timings) / RENDER_BUDGET_MS:.4f}")


if __name__ == "__main__":
    main()
