"""The asynchronous client: the same resources and methods as ``Client``, awaited.

``async with AsyncClient(url, key) as client: job = await client.audits.create(model_id=...)``;
lists are async iterators (``async for job in client.audits.list(status="running")``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from . import _common
from ._common import RETRY_STATUSES, RetryPolicy
from .errors import Conflict, WaitTimeout
from .schemas import Dataset, Job, Model, Page

T = TypeVar("T")
JobRef = Job | str | dict[str, Any]
Progress = Callable[[Job], Awaitable[None] | None]


async def _pause(seconds: float) -> None:
    await asyncio.sleep(seconds)


class AsyncClient:
    """An asyncio client of one SSAH Audit server; see ``Client`` for the arguments and the retry rules."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        if http is None:
            self.url, self._key = _common.settings(url, key)
            http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)
            self._owns_http = True
        else:
            self.url, self._key = str(http.base_url).rstrip("/"), key or os.environ.get("SSAH_API_KEY")
            self._owns_http = False
        self._http = http
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.models = AsyncModels(self)
        self.datasets = AsyncDatasets(self)
        self.audits = AsyncAudits(self, "audits")
        self.evaluations = AsyncEvaluations(self, "evaluations")
        self.finetunes = AsyncFinetunes(self, "finetunes")
        self.probes = AsyncProbes(self, "probes")
        self.comparisons = AsyncComparisons(self, "comparisons")
        self.jobs = AsyncJobs(self, "jobs")
        self.webhooks = AsyncWebhooks(self)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        files: dict[str, tuple[str, IO[bytes], str]] | None = None,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one call, retried when idempotent; an error answer raises its ``ProblemError``."""
        sent = {**_common.headers(self._key), **(headers or {})}
        idempotent = method in ("GET", "HEAD") or "Idempotency-Key" in sent
        attempt = 0
        while True:
            for _, stream, _ in (files or {}).values():
                stream.seek(0)
            try:
                response = await self._http.request(method, path, headers=sent, files=files, **kwargs)
            except httpx.TransportError:
                delay = self.retry.delay(attempt, None) if idempotent else None
                if delay is None:
                    raise
            else:
                if response.status_code < 400 or response.status_code in ok:
                    return response
                delay = self.retry.delay(attempt, response) if idempotent else None
                if response.status_code not in RETRY_STATUSES or delay is None:
                    raise _common.error_of(response)
            await _pause(delay)
            attempt += 1

    async def get_json(self, path: str, **params: Any) -> Any:
        return (await self.request("GET", path, params=_common.clean(params))).json()

    async def post_json(self, path: str, body: dict[str, Any] | None, *, idempotency_key: str | None) -> httpx.Response:
        key = idempotency_key or _common.new_idempotency_key()
        return await self.request("POST", path, json=body, headers={"Idempotency-Key": key})

    async def page(
        self, path: str, item: Callable[[dict[str, Any]], T], *, limit: int = 50, offset: int = 0, **params: Any
    ) -> Page[T]:
        return Page.from_json(await self.get_json(path, limit=limit, offset=offset, **params), item)

    async def paginate(
        self, path: str, item: Callable[[dict[str, Any]], T], *, page_size: int = 100, **params: Any
    ) -> AsyncIterator[T]:
        offset = 0
        while True:
            page = await self.page(path, item, limit=page_size, offset=offset, **params)
            for entry in page.items:
                yield entry
            if page.next is None or not page.items:
                return
            offset = page.offset + len(page.items)

    async def download(self, path: str, dest: str | os.PathLike[str], *, fallback: str) -> Path:
        attempt = 0
        while True:
            async with self._http.stream("GET", path, headers=_common.headers(self._key)) as response:
                if response.status_code < 400:
                    target = _common.target_path(dest, response, fallback)
                    partial = target.with_name(target.name + ".part")
                    with open(partial, "wb") as out:
                        async for chunk in response.aiter_bytes():
                            out.write(chunk)
                    partial.replace(target)
                    return target
                await response.aread()
                delay = self.retry.delay(attempt, response)
                if response.status_code not in RETRY_STATUSES or delay is None:
                    raise _common.error_of(response)
            await _pause(delay)
            attempt += 1

    async def series(
        self,
        *,
        order_by: str,
        labels: dict[str, str] | None = None,
        model_ids: list[str] | None = None,
        compare: bool = True,
    ) -> dict[str, Any]:
        """``POST /v1/series`` (see ``Client.series``)."""
        body = _common.series_body(order_by, labels, model_ids, compare)
        return dict((await self.post_json("/v1/series", body, idempotency_key=None)).json())

    async def wait(
        self,
        job: JobRef,
        timeout: float | None = None,
        on_progress: Progress | None = None,
        *,
        poll_interval: float | None = None,
    ) -> Job:
        """Poll ``job`` until it is terminal; ``on_progress`` may be a plain function or a coroutine function."""
        interval = self.poll_interval if poll_interval is None else poll_interval
        current = job if isinstance(job, Job) else await self.jobs.get(_common.job_id(job))
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = True
        while True:
            if changed and on_progress is not None:
                called = on_progress(current)
                if called is not None:
                    await called
            if current.terminal:
                return current
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(current, timeout or 0.0)
            await _pause(interval if left is None else min(interval, left))
            conditional = {"If-None-Match": current.etag} if current.etag else {}
            response = await self.request("GET", f"/v1/jobs/{current.id}", headers=conditional, ok=(304,))
            changed = response.status_code != 304
            if changed:
                current = Job.from_json(response.json(), etag=response.headers.get("etag"))


class _AsyncResource:
    def __init__(self, client: AsyncClient):
        self._client = client


class AsyncModels(_AsyncResource):
    async def create(
        self,
        name: str,
        source: str,
        *,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Model:
        body = _common.model_body(name, source, labels)
        response = await self._client.post_json("/v1/models", body, idempotency_key=idempotency_key)
        return Model.from_json(response.json())

    async def get(self, model_id: str) -> Model:
        return Model.from_json(await self._client.get_json(f"/v1/models/{model_id}"))

    async def delete(self, model_id: str) -> None:
        await self._client.request("DELETE", f"/v1/models/{model_id}")

    def list(self, *, page_size: int = 100) -> AsyncIterator[Model]:
        return self._client.paginate("/v1/models", Model.from_json, page_size=page_size)

    async def ensure(self, name: str, source: str, *, labels: dict[str, str] | None = None) -> Model:
        try:
            return await self.create(name, source, labels=labels)
        except Conflict:
            async for model in self.list():
                if model.name == name:
                    if model.source != source:
                        raise ValueError(
                            f"model {name!r} is registered with source {model.source!r}, not {source!r}"
                        ) from None
                    return model
            raise


class AsyncWebhooks(_AsyncResource):
    async def rotate_secret(self, *, idempotency_key: str | None = None) -> str:
        response = await self._client.post_json("/v1/webhook-secret", None, idempotency_key=idempotency_key)
        return str(response.json()["secret"])

    async def secret_status(self) -> dict[str, Any]:
        return dict(await self._client.get_json("/v1/webhook-secret"))

    def deliveries(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        return self._client.paginate("/v1/webhook-deliveries", dict, page_size=page_size, **filters)


class AsyncDatasets(_AsyncResource):
    async def upload(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        format: str | None = None,
        idempotency_key: str | None = None,
    ) -> Dataset:
        path = Path(path)
        data = {k: v for k, v in {"name": name, "format": format}.items() if v is not None}
        key = idempotency_key or _common.new_idempotency_key()
        with path.open("rb") as stream:
            response = await self._client.request(
                "POST",
                "/v1/datasets",
                data=data,
                files={"file": (path.name, stream, "application/octet-stream")},
                headers={"Idempotency-Key": key},
            )
        return Dataset.from_json(response.json())

    create = upload

    async def delete(self, dataset_id: str) -> None:
        await self._client.request("DELETE", f"/v1/datasets/{dataset_id}")

    async def get(self, dataset_id: str) -> Dataset:
        return Dataset.from_json(await self._client.get_json(f"/v1/datasets/{dataset_id}"))

    def list(self, *, page_size: int = 100) -> AsyncIterator[Dataset]:
        return self._client.paginate("/v1/datasets", Dataset.from_json, page_size=page_size)


def _job(body: dict[str, Any]) -> Job:
    return Job.from_json(body)


class _AsyncJobCollection(_AsyncResource):
    def __init__(self, client: AsyncClient, collection: str):
        super().__init__(client)
        self.path = f"/v1/{collection}"

    async def create(
        self, body: dict[str, Any] | None = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Job:
        payload = {**(body or {}), **fields}
        response = await self._client.post_json(self.path, payload, idempotency_key=idempotency_key)
        return Job.from_json(response.json())

    async def get(self, job: JobRef) -> Job:
        response = await self._client.request("GET", f"{self.path}/{_common.job_id(job)}")
        return Job.from_json(response.json(), etag=response.headers.get("etag"))

    async def page(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> Page[Job]:
        return await self._client.page(self.path, _job, limit=limit, offset=offset, **filters)

    def list(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[Job]:
        return self._client.paginate(self.path, _job, page_size=page_size, **filters)

    async def cancel(self, job: JobRef, *, idempotency_key: str | None = None) -> Job:
        path = f"{self.path}/{_common.job_id(job)}/cancel"
        return Job.from_json((await self._client.post_json(path, None, idempotency_key=idempotency_key)).json())

    async def wait(self, job: JobRef, timeout: float | None = None, on_progress: Progress | None = None) -> Job:
        return await self._client.wait(job, timeout, on_progress)

    async def delete(self, job: JobRef) -> None:
        await self._client.request("DELETE", f"{self.path}/{_common.job_id(job)}")


class AsyncAudits(_AsyncJobCollection):
    async def unit_map(self, audit: JobRef) -> dict[str, Any]:
        return await self._client.get_json(f"{self.path}/{_common.job_id(audit)}/unit-map")

    def unit_map_layers(self, audit: JobRef, *, page_size: int = 100) -> AsyncIterator[dict[str, Any]]:
        return self._client.paginate(f"{self.path}/{_common.job_id(audit)}/unit-map/layers", dict, page_size=page_size)

    async def download_unit_map(self, audit: JobRef, dest: str | os.PathLike[str]) -> Path:
        audit_id = _common.job_id(audit)
        return await self._client.download(
            f"{self.path}/{audit_id}/unit-map/artifact", dest, fallback=f"unit-map-{audit_id}"
        )


class AsyncEvaluations(_AsyncJobCollection):
    async def scores(self, evaluation: JobRef) -> list[dict[str, Any]]:
        return await self._client.get_json(f"{self.path}/{_common.job_id(evaluation)}/scores")

    def records(self, evaluation: JobRef, *, page_size: int = 100, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        path = f"{self.path}/{_common.job_id(evaluation)}/records"
        return self._client.paginate(path, dict, page_size=page_size, **filters)

    async def download_result(self, evaluation: JobRef, dest: str | os.PathLike[str]) -> Path:
        evaluation_id = _common.job_id(evaluation)
        return await self._client.download(
            f"{self.path}/{evaluation_id}/result", dest, fallback=f"evaluation-{evaluation_id}.json"
        )


class AsyncFinetunes(_AsyncJobCollection):
    async def result(self, finetune: JobRef) -> dict[str, Any]:
        return await self._client.get_json(f"{self.path}/{_common.job_id(finetune)}/result")

    async def download_model(self, finetune: JobRef, dest: str | os.PathLike[str]) -> Path:
        finetune_id = _common.job_id(finetune)
        return await self._client.download(
            f"{self.path}/{finetune_id}/model", dest, fallback=f"finetune-{finetune_id}.tar"
        )


class AsyncProbes(_AsyncJobCollection):
    async def result(self, probe: JobRef) -> dict[str, Any]:
        return await self._client.get_json(f"{self.path}/{_common.job_id(probe)}/result")

    async def download_direction(self, probe: JobRef, dest: str | os.PathLike[str]) -> Path:
        probe_id = _common.job_id(probe)
        return await self._client.download(f"{self.path}/{probe_id}/direction", dest, fallback=f"probe-{probe_id}.zip")


class AsyncComparisons(_AsyncJobCollection):
    async def result(self, comparison: JobRef) -> dict[str, Any]:
        return await self._client.get_json(f"{self.path}/{_common.job_id(comparison)}/result")


class AsyncJobs(_AsyncJobCollection):
    """Jobs of every kind: ``/v1/jobs`` (filter ``kind=``)."""

    async def create(
        self, body: dict[str, Any] | None = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Job:
        raise TypeError("jobs are created through their kind: client.audits.create(...)")
