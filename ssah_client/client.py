"""The synchronous client: ``Client(url, key).audits.create(model_id=...)``, ``client.wait(job)``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from . import _common
from ._common import RETRY_STATUSES, RetryPolicy
from .errors import Conflict, WaitTimeout
from .schemas import Dataset, Job, Model, Page

T = TypeVar("T")
JobRef = Job | str | dict[str, Any]


def _pause(seconds: float) -> None:
    """Sleep between polls and retries (one place, so tests can stand in for the clock)."""
    time.sleep(seconds)


class Client:
    """A client of one SSAH Audit server.

    ``url`` and ``key`` default to ``SSAH_SERVER`` and ``SSAH_API_KEY``. GETs, and POSTs sent with an
    ``Idempotency-Key`` (every create and cancel: one key is generated per call), are retried on 429 and
    503 after ``Retry-After`` (``retry``). ``http`` lends an ``httpx.Client`` of the caller's (its base URL
    wins); ``transport`` an httpx transport.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if http is None:
            self.url, self._key = _common.settings(url, key)
            http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
            self._owns_http = True
        else:
            self.url, self._key = str(http.base_url).rstrip("/"), key or os.environ.get("SSAH_API_KEY")
            self._owns_http = False
        self._http = http
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.models = Models(self)
        self.datasets = Datasets(self)
        self.audits = Audits(self, "audits", "audit")
        self.evaluations = Evaluations(self, "evaluations", "evaluation")
        self.finetunes = Finetunes(self, "finetunes", "finetune")
        self.probes = Probes(self, "probes", "probe")
        self.comparisons = Comparisons(self, "comparisons", "comparison")
        self.jobs = Jobs(self)
        self.webhooks = Webhooks(self)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        files: dict[str, tuple[str, IO[bytes], str]] | None = None,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one call, retried when idempotent; an error answer raises its ``ProblemError``.

        ``ok`` lists extra statuses that are answers, not errors (304 to a conditional GET)."""
        sent = {**_common.headers(self._key), **(headers or {})}
        idempotent = method in ("GET", "HEAD") or "Idempotency-Key" in sent
        attempt = 0
        while True:
            for _, stream, _ in (files or {}).values():
                stream.seek(0)  # a retried upload sends the file again from its start
            try:
                response = self._http.request(method, path, headers=sent, files=files, **kwargs)
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
            _pause(delay)
            attempt += 1

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_common.clean(params)).json()

    def post_json(self, path: str, body: dict[str, Any] | None, *, idempotency_key: str | None) -> httpx.Response:
        key = idempotency_key or _common.new_idempotency_key()
        return self.request("POST", path, json=body, headers={"Idempotency-Key": key})

    def page(
        self, path: str, item: Callable[[dict[str, Any]], T], *, limit: int = 50, offset: int = 0, **params: Any
    ) -> Page[T]:
        """One page of a list route (``limit`` 1..200)."""
        return Page.from_json(self.get_json(path, limit=limit, offset=offset, **params), item)

    def paginate(
        self, path: str, item: Callable[[dict[str, Any]], T], *, page_size: int = 100, **params: Any
    ) -> Iterator[T]:
        """Every item of a list route, a page at a time, until a page says there is no ``next``."""
        offset = 0
        while True:
            page = self.page(path, item, limit=page_size, offset=offset, **params)
            yield from page.items
            if page.next is None or not page.items:
                return
            offset = page.offset + len(page.items)

    def download(self, path: str, dest: str | os.PathLike[str], *, fallback: str) -> Path:
        """Stream a file route to ``dest`` (a file, or a directory for the server's file name)."""
        attempt = 0
        while True:
            with self._http.stream("GET", path, headers=_common.headers(self._key)) as response:
                if response.status_code < 400:
                    target = _common.target_path(dest, response, fallback)
                    partial = target.with_name(target.name + ".part")
                    with open(partial, "wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
                    partial.replace(target)  # a broken transfer never leaves a truncated file under the name
                    return target
                response.read()
                delay = self.retry.delay(attempt, response)
                if response.status_code not in RETRY_STATUSES or delay is None:
                    raise _common.error_of(response)
            _pause(delay)
            attempt += 1

    def series(
        self,
        *,
        order_by: str,
        labels: dict[str, str] | None = None,
        model_ids: list[str] | None = None,
        compare: bool = True,
    ) -> dict[str, Any]:
        """``POST /v1/series``: the checkpoints whose labels include ``labels``, ordered by the ``order_by`` label.

        Returns ``{"points": [...], "transitions": [...]}``; missing comparisons are queued unless ``compare``
        is false (ask again to read their cross-tabs)."""
        body = _common.series_body(order_by, labels, model_ids, compare)
        return dict(self.post_json("/v1/series", body, idempotency_key=None).json())

    # -- jobs -------------------------------------------------------------------------------------
    def wait(
        self,
        job: JobRef,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
        *,
        poll_interval: float | None = None,
    ) -> Job:
        """Poll ``job`` until it succeeds, fails or is cancelled, and return it; ``WaitTimeout`` past ``timeout``.

        ``on_progress`` is called with the job first and then each time it changes. Polls send the job's
        ETag, so an unchanged job costs the server a 304."""
        interval = self.poll_interval if poll_interval is None else poll_interval
        current = job if isinstance(job, Job) else self.jobs.get(_common.job_id(job))
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = True
        while True:
            if changed and on_progress is not None:
                on_progress(current)
            if current.terminal:
                return current
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(current, timeout or 0.0)
            _pause(interval if left is None else min(interval, left))
            conditional = {"If-None-Match": current.etag} if current.etag else {}
            response = self.request("GET", f"/v1/jobs/{current.id}", headers=conditional, ok=(304,))
            changed = response.status_code != 304
            if changed:
                current = Job.from_json(response.json(), etag=response.headers.get("etag"))


class _Resource:
    def __init__(self, client: Client):
        self._client = client


class Models(_Resource):
    """Registered model sources: ``/v1/models``."""

    def create(
        self,
        name: str,
        source: str,
        *,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Model:
        """Register ``source`` under ``name`` (unique to the tenant; ``Conflict`` if taken), with ``labels``."""
        body = _common.model_body(name, source, labels)
        return Model.from_json(self._client.post_json("/v1/models", body, idempotency_key=idempotency_key).json())

    def get(self, model_id: str) -> Model:
        return Model.from_json(self._client.get_json(f"/v1/models/{model_id}"))

    def list(self, *, page_size: int = 100) -> Iterator[Model]:
        """Every registered model, newest first."""
        return self._client.paginate("/v1/models", Model.from_json, page_size=page_size)

    def delete(self, model_id: str) -> None:
        """Remove the registration (``Conflict`` while a queued or running job uses it; its finished jobs stay)."""
        self._client.request("DELETE", f"/v1/models/{model_id}")

    def ensure(self, name: str, source: str, *, labels: dict[str, str] | None = None) -> Model:
        """The model named ``name``: registered now (with ``labels``), or the one registered before with the same source."""
        try:
            return self.create(name, source, labels=labels)
        except Conflict:
            for model in self.list():
                if model.name == name:
                    if model.source != source:
                        raise ValueError(
                            f"model {name!r} is registered with source {model.source!r}, not {source!r}"
                        ) from None
                    return model
            raise


class Datasets(_Resource):
    """Uploaded datasets: ``/v1/datasets``."""

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        format: str | None = None,
        idempotency_key: str | None = None,
    ) -> Dataset:
        """Upload a JSONL, CSV, JSON or text file; the format comes from ``format`` or the extension."""
        path = Path(path)
        data = {k: v for k, v in {"name": name, "format": format}.items() if v is not None}
        key = idempotency_key or _common.new_idempotency_key()
        with path.open("rb") as stream:
            response = self._client.request(
                "POST",
                "/v1/datasets",
                data=data,
                files={"file": (path.name, stream, "application/octet-stream")},
                headers={"Idempotency-Key": key},
            )
        return Dataset.from_json(response.json())

    create = upload

    def get(self, dataset_id: str) -> Dataset:
        return Dataset.from_json(self._client.get_json(f"/v1/datasets/{dataset_id}"))

    def list(self, *, page_size: int = 100) -> Iterator[Dataset]:
        return self._client.paginate("/v1/datasets", Dataset.from_json, page_size=page_size)

    def delete(self, dataset_id: str) -> None:
        """Remove the upload and its file (``Conflict`` while a queued or running job reads it)."""
        self._client.request("DELETE", f"/v1/datasets/{dataset_id}")


class Webhooks(_Resource):
    """The tenant's webhook signing secret and the record of deliveries."""

    def rotate_secret(self, *, idempotency_key: str | None = None) -> str:
        """Create or replace the signing secret and return it (shown once; the old one stops at once)."""
        return str(self._client.post_json("/v1/webhook-secret", None, idempotency_key=idempotency_key).json()["secret"])

    def secret_status(self) -> dict[str, Any]:
        """``{"configured": bool, "created_at": ...}``, never the secret."""
        return dict(self._client.get_json("/v1/webhook-secret"))

    def deliveries(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every delivery, newest first; filters ``job_id``, ``status`` (pending, succeeded, failed)."""
        return self._client.paginate("/v1/webhook-deliveries", dict, page_size=page_size, **filters)


def _job(body: dict[str, Any]) -> Job:
    return Job.from_json(body)


class _JobCollection(_Resource):
    """Create, get, list, cancel and wait for the jobs of one kind."""

    def __init__(self, client: Client, collection: str, kind: str):
        super().__init__(client)
        self.path, self.kind = f"/v1/{collection}", kind

    def create(
        self, body: dict[str, Any] | None = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Job:
        """Queue a job with ``body`` and ``fields`` (the request body's fields); returns it queued.

        A generated Idempotency-Key makes the call safe to retry: a retry never queues a second job."""
        payload = {**(body or {}), **fields}
        response = self._client.post_json(self.path, payload, idempotency_key=idempotency_key)
        return Job.from_json(response.json())

    def get(self, job: JobRef) -> Job:
        response = self._client.request("GET", f"{self.path}/{_common.job_id(job)}")
        return Job.from_json(response.json(), etag=response.headers.get("etag"))

    def page(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> Page[Job]:
        """One page of jobs; filters: ``status``, ``model_id``, ``created_after``, ``created_before``, ..."""
        return self._client.page(self.path, _job, limit=limit, offset=offset, **filters)

    def list(self, *, page_size: int = 100, **filters: Any) -> Iterator[Job]:
        """Every job matching ``filters``, newest first, fetched a page at a time."""
        return self._client.paginate(self.path, _job, page_size=page_size, **filters)

    def cancel(self, job: JobRef, *, idempotency_key: str | None = None) -> Job:
        """Cancel: at once when queued, by request when running; ``Conflict`` once finished."""
        response = self._client.post_json(
            f"{self.path}/{_common.job_id(job)}/cancel", None, idempotency_key=idempotency_key
        )
        return Job.from_json(response.json())

    def wait(self, job: JobRef, timeout: float | None = None, on_progress: Callable[[Job], None] | None = None) -> Job:
        return self._client.wait(job, timeout, on_progress)

    def delete(self, job: JobRef) -> None:
        """Remove a finished job with its results and artifacts (``Conflict`` while it or a job using it runs)."""
        self._client.request("DELETE", f"{self.path}/{_common.job_id(job)}")


class Audits(_JobCollection):
    def unit_map(self, audit: JobRef) -> dict[str, Any]:
        """The unit map summary of a succeeded audit (``JobNotSucceeded`` before)."""
        return self._client.get_json(f"{self.path}/{_common.job_id(audit)}/unit-map")

    def unit_map_layers(self, audit: JobRef, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._client.paginate(f"{self.path}/{_common.job_id(audit)}/unit-map/layers", dict, page_size=page_size)

    def download_unit_map(self, audit: JobRef, dest: str | os.PathLike[str]) -> Path:
        audit_id = _common.job_id(audit)
        return self._client.download(f"{self.path}/{audit_id}/unit-map/artifact", dest, fallback=f"unit-map-{audit_id}")


class Evaluations(_JobCollection):
    def scores(self, evaluation: JobRef) -> list[dict[str, Any]]:
        """The scores of a succeeded evaluation (metrics, protocol hash)."""
        return self._client.get_json(f"{self.path}/{_common.job_id(evaluation)}/scores")

    def records(self, evaluation: JobRef, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every prompt's record (answer, verdicts); filters as the route's (``set``, ``condition``, ``verdict``...)."""
        return self._client.paginate(
            f"{self.path}/{_common.job_id(evaluation)}/records", dict, page_size=page_size, **filters
        )

    def download_result(self, evaluation: JobRef, dest: str | os.PathLike[str]) -> Path:
        """The whole evaluation.json (metrics, protocol, every record)."""
        evaluation_id = _common.job_id(evaluation)
        return self._client.download(
            f"{self.path}/{evaluation_id}/result", dest, fallback=f"evaluation-{evaluation_id}.json"
        )


class Finetunes(_JobCollection):
    def result(self, finetune: JobRef) -> dict[str, Any]:
        """Loss curve, masks and the output model of a succeeded fine-tune."""
        return self._client.get_json(f"{self.path}/{_common.job_id(finetune)}/result")

    def download_model(self, finetune: JobRef, dest: str | os.PathLike[str]) -> Path:
        """The trained model directory as a tar file."""
        finetune_id = _common.job_id(finetune)
        return self._client.download(f"{self.path}/{finetune_id}/model", dest, fallback=f"finetune-{finetune_id}.tar")


class Probes(_JobCollection):
    def result(self, probe: JobRef) -> dict[str, Any]:
        return self._client.get_json(f"{self.path}/{_common.job_id(probe)}/result")

    def download_direction(self, probe: JobRef, dest: str | os.PathLike[str]) -> Path:
        """A zip of direction.safetensors (for ``ssah eval --direction``), direction.json and probe.json."""
        probe_id = _common.job_id(probe)
        return self._client.download(f"{self.path}/{probe_id}/direction", dest, fallback=f"probe-{probe_id}.zip")


class Comparisons(_JobCollection):
    def result(self, comparison: JobRef) -> dict[str, Any]:
        return self._client.get_json(f"{self.path}/{_common.job_id(comparison)}/result")


class Jobs(_JobCollection):
    """Jobs of every kind: ``/v1/jobs`` (filter ``kind=``)."""

    def __init__(self, client: Client):
        super().__init__(client, "jobs", "job")

    def create(
        self, body: dict[str, Any] | None = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Job:
        raise TypeError(
            "jobs are created through their kind: client.audits.create(...), client.evaluations.create(...)"
        )
