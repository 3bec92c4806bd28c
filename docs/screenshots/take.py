"""Retake the dashboard screenshots in this folder: runs the browser tests with SSAH_SCREENSHOT_DIR set.

    python docs/screenshots/take.py     (needs PostgreSQL, Redis, /usr/bin/chromium and playwright)

With ``--unit-map DIR`` (an ``ssah audit --out`` directory) it takes the audit page of that real unit map
instead, as ``<name>.png``: the dashboard's static files in Chromium, its /v1 answers computed from the
directory by the module the API uses (bench/dashboard_render.py), no server or database needed.

    python docs/screenshots/take.py --unit-map runs/smollm2-audit --name audit-smollm2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def unit_map_page(directory: Path, name: str) -> Path:
    sys.path.insert(0, str(REPO))
    from bench.dashboard_render import audit_page, render_ms, responses

    bodies, _ = responses(directory)
    out = HERE / f"{name}.png"
    with audit_page(bodies) as page:
        render_ms(page, str(bodies["audit"]))
        page.screenshot(path=str(out), full_page=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit-map", type=Path, help="an audit directory (summary.json, unit_map.safetensors)")
    parser.add_argument("--name", default="audit-unit-map", help="file name of the screenshot, without .png")
    args = parser.parse_args()
    if args.unit_map:
        print(f"wrote {unit_map_page(args.unit_map, args.name)}")
        sys.exit(0)
    env = {**os.environ, "SSAH_SCREENSHOT_DIR": str(HERE)}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "slow", "tests/dashboard/test_browser.py"]
    sys.exit(subprocess.call(command, cwd=REPO, env=env))
