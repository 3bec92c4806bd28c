"""A typed Python client of the SSAH Audit REST API (``/v1``), sync and async, over httpx.

```python
from ssah_client import Client

with Client("https://ssah.example.com", key) as client:      # or SSAH_SERVER / SSAH_API_KEY
    model = client.models.ensure("smol", "builtin:smollm2")
    job = client.audits.create(model_id=model.id, samples=64)
    job = client.wait(job, timeout=3600, on_progress=lambda j: print(j.status, j.progress))
    print(client.audits.unit_map(job)["classes"])
```

Error answers raise typed exceptions (``ssah_client.errors``); this package imports neither the
engine nor the service.
"""

from ._common import RetryPolicy
from .aio import AsyncClient
from .client import Client
from .errors import (
    BadRequest,
    Conflict,
    ContentTooLarge,
    IdempotencyKeyReused,
    JobNotSucceeded,
    LimitExceeded,
    ModelSourceRefused,
    NotFound,
    ProblemError,
    RateLimited,
    Retryable,
    ServerError,
    SSAHError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from .schemas import Dataset, Job, Model, Page

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ContentTooLarge",
    "Dataset",
    "IdempotencyKeyReused",
    "Job",
    "JobNotSucceeded",
    "LimitExceeded",
    "Model",
    "ModelSourceRefused",
    "NotFound",
    "Page",
    "ProblemError",
    "RateLimited",
    "RetryPolicy",
    "Retryable",
    "SSAHError",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WaitTimeout",
]
