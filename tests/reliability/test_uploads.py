"""A corrupt dataset upload is refused with its line and field, and nothing of it is stored."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.models import Dataset
from tests.reliability.conftest import Stack

CORRUPT = [
    ("bad UTF-8", "a.jsonl", b'{"prompt": "hi"}\n{"prompt": "caf\xe9"}\n', "line 2", "UTF-8"),
    ("bad JSON line", "a.jsonl", b'{"prompt": "hi"}\n{"prompt": "cut\n', "line 2", "not JSON"),
    ("truncated CSV", "a.csv", b'prompt,response\nhi,there\n"How do I bake', "line 3", "CSV"),
    ("wrong fields", "a.jsonl", b'{"prompt": "hi"}\n{"question": "no prompt"}\n', "line 2", "'prompt'"),
    ("wrong CSV header", "a.csv", b"question,answer\nhi,there\n", "line 1", "header"),
    ("empty prompt cell", "a.csv", b"prompt,response\nhi,there\n,orphan\n", "line 3", "'prompt'"),
    ("JSON list, bad record", "a.json", b'[{"prompt": "hi"}, {"prompt": 3}]', "record 2", "'prompt'"),
    ("empty file", "a.jsonl", b"", "", "empty"),
    ("only blank lines", "a.jsonl", b"\n \n", "", "no records"),
]


@pytest.mark.parametrize(("case", "filename", "content", "where", "what"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_upload_is_refused_naming_the_line_and_nothing_is_stored(
    stack: Stack, client, tenant, case, filename, content, where, what
):
    r = client.post("/v1/datasets", files={"file": (filename, content)})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert where in problem["detail"] and what in problem["detail"], problem
    assert problem["errors"][0]["loc"] == "body.file"

    with stack.factory() as session:
        rows = session.scalars(sa.select(Dataset.id).where(Dataset.tenant_id == tenant[0])).all()
    assert rows == []
    stored = stack.artifacts.path / str(tenant[0]) / "datasets"
    assert not stored.exists() or list(stored.iterdir()) == []
    assert client.get("/v1/datasets").json()["total"] == 0

    # The same tenant's next, valid upload is stored as usual.
    r = client.post("/v1/datasets", files={"file": ("ok.jsonl", b'{"prompt": "hi", "response": "hello"}\n')})
    assert r.status_code == 201 and r.json()["rows"] == 1
