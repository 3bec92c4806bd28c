"""Version 1 of the API: one router per resource, all under ``/v1``."""

from fastapi import APIRouter

from service.api.v1 import (
    audit_log,
    audits,
    comparisons,
    datasets,
    evaluations,
    finetunes,
    jobs,
    models,
    probes,
    retention,
    series,
    unit_maps,
    webhooks,
)
from service.schemas.common import problem_responses

# Every /v1 route: the key (401), the parameters (422), the key's rate limit (429), the database (503).
router = APIRouter(prefix="/v1", responses=problem_responses(401, 422, 429, 503))
for module in (
    models,
    datasets,
    audits,
    unit_maps,
    evaluations,
    finetunes,
    comparisons,
    probes,
    jobs,
    series,
    webhooks,
    retention,
    audit_log,
):
    router.include_router(module.router)
