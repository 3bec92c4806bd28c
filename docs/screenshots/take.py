"""Retake the dashboard screenshots in this folder: runs the browser tests with SSAH_SCREENSHOT_DIR set.

    python docs/screenshots/take.py     (needs PostgreSQL, Redis, /usr/bin/chromium and playwright)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    env = {**os.environ, "SSAH_SCREENSHOT_DIR": str(HERE)}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "slow", "tests/dashboard/test_browser.py"]
    sys.exit(subprocess.call(command, cwd=HERE.parents[1], env=env))
