"""The three parts keep their boundaries (docs/architecture.md): checked on the source's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "ssah_engine": {"fastapi", "sqlalchemy", "celery", "service", "worker", "redis", "alembic"},
    "service": {"torch", "transformers", "worker"},
    "worker": {"fastapi"},
    # The client is httpx and the standard library: a pipeline installs it without torch or the service.
    "ssah_client": {
        "torch",
        "transformers",
        "ssah_engine",
        "ssah",
        "service",
        "worker",
        "fastapi",
        "sqlalchemy",
        "celery",
        "pydantic",
    },
}
# The engine modules the API may import: the job configs its request schemas derive from, all torch-free.
SERVICE_MAY_IMPORT = {
    "ssah_engine.settings_fields",
    "ssah_engine.audit_config",
    "ssah_engine.finetune",
    "ssah_engine.probe",
    "ssah_engine.data.builtin",
    "ssah_engine.data.benchmarks",  # the named benchmarks a request may name, as data.builtin the builtin sets
    "ssah_engine.data.loaders",  # parse_hf: the syntax of an hf: source a request names (torch-free)
    "ssah_engine.judge_spec",
    "ssah_engine.placement",  # the device-map fields of a job's placement object (torch-free)
    "ssah_engine.unitmap_arrays",  # the unit map's figure arrays (numpy, no torch), shared with ssah report
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_its_boundary(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no source"
    offenders = {str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN[package]) for path in files}
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_the_service_imports_only_the_engine_configs():
    imported = set()
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ssah_engine"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("ssah_engine"))
    assert imported, "the request schemas derive from the engine configs"
    assert imported <= SERVICE_MAY_IMPORT


def test_engine_never_reads_the_environment():
    for path in (ROOT / "ssah_engine").rglob("*.py"):
        source = path.read_text()
        assert "os.environ" not in source and "getenv" not in source, path


def test_the_checker_sees_imports():
    assert {"torch", "pytest", "ssah_engine"} <= imported_modules(ROOT / "tests" / "engine" / "test_scoring.py")


# What each entry point loads, followed through every import (a fresh interpreter per entry point).
LOADED_FORBIDDEN = {
    "worker.app": {"fastapi", "starlette"},
    "ssah_engine.audit, ssah_engine.evaluation, ssah_engine.finetune, ssah_engine.ablation": {
        "fastapi",
        "starlette",
        "sqlalchemy",
        "celery",
        "service",
        "worker",
        "redis",
        "alembic",
    },
    "service.main": {"torch", "transformers", "worker"},
    "ssah_client": {"torch", "transformers", "ssah_engine", "service", "worker", "fastapi", "sqlalchemy", "pydantic"},
}


@pytest.mark.parametrize("modules", sorted(LOADED_FORBIDDEN))
def test_entry_points_never_load_what_their_part_must_not_use(modules):
    import json
    import subprocess
    import sys

    code = f"import json, sys; import {modules}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(loaded.stdout.strip().splitlines()[-1])) & LOADED_FORBIDDEN[modules] == set()
