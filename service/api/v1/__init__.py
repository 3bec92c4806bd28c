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
    series,
    unit_maps,
    webhooks,
)

router = APIRouter(prefix="/v1")
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
    audit_log,
):
    router.include_router(module.router)
