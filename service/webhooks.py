"""Webhooks: a finished job's resource POSTed to its ``callback_url``, signed, retried, recorded.

The database is the outbox. The transaction that ends a job adds a ``webhook_deliveries`` row
(``enqueue_delivery``; the reconciler's ``create_missing_deliveries`` catches any ending written
elsewhere); a sender thread in every worker (``start_deliverer``, or the embedded worker's loop) takes
due rows (``deliver_due``), POSTs and records the answer, and on failure schedules the next try with
exponential backoff. A row is leased by moving ``next_attempt_at`` past the request's timeout, so two
senders never post it at once and a sender that dies mid-request leaves it to the next.

SSRF: a callback host is resolved and every address must be public (no loopback, private, link-local,
reserved, multicast, shared or unspecified range) unless the deployment lists the host in
``SSAH_WEBHOOK_ALLOWED_HOSTS``. That list's ``*`` (the default) admits any other host that passes the
range check; without ``*`` only the listed hosts are called. Checked when a job
is submitted and again when it is delivered, and the request goes to the address that was checked
(no second lookup a DNS rebinding could answer differently), with no redirects followed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import logging
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.models import TERMINAL_STATUSES, Job, JobStatus, Tenant, WebhookDelivery, utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "SSAH-Signature"
SECRET_PREFIX = "whsec_"
USER_AGENT = "ssah-webhooks/1"
MAX_ERROR = 1000

Resolver = Callable[[str, int], list[str]]


class CallbackRefused(ValueError):
    """A callback URL this deployment will not call; the message says why."""


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and 32 random bytes, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def rotate_secret(session: Session, *, tenant_id: uuid.UUID) -> tuple[str, datetime]:
    """Give the tenant a new webhook secret (the old one stops signing at once); return it and when."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id}")
    tenant.webhook_secret, tenant.webhook_secret_created_at = generate_secret(), utcnow()
    session.flush()
    return tenant.webhook_secret, tenant.webhook_secret_created_at


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``SSAH-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` seconds old (receivers)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp=timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """Where a checked callback goes: the URL's parts and the addresses that passed the check."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def _refused_range(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
        address = mapped
    for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:  # 100.64.0.0/10 (shared), 192.0.0.0/24 and the like
        return "non-global"
    return None


def check_callback_url(url: str, *, allowed_hosts: list[str], resolve: Resolver | None = None) -> Target:
    """The target of ``url`` if this deployment may call it; ``CallbackRefused`` saying why otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"callback_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused(f"callback_url must be http:// or https://, not {parts.scheme or 'no scheme'}")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must not carry a user name or password")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise CallbackRefused("callback_url must not contain spaces or control characters")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise CallbackRefused("callback_url has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    hosts = {h.rstrip(".").lower() for h in allowed_hosts}
    listed = host in hosts
    if not listed and "*" not in hosts:
        raise CallbackRefused(
            f"callback host {host!r} is not in this deployment's SSAH_WEBHOOK_ALLOWED_HOSTS "
            f"({', '.join(allowed_hosts) or 'empty: no callbacks'})"
        )
    try:
        addresses = (resolve or _system_resolver)(host, port)
    except (OSError, UnicodeError) as exc:
        raise CallbackRefused(f"callback host {host!r} does not resolve ({exc})") from None
    if not addresses:
        raise CallbackRefused(f"callback host {host!r} does not resolve")
    if not listed:
        for text in addresses:
            refused = _refused_range(ipaddress.ip_address(text.split("%")[0]))
            if refused is not None:
                article = "an" if refused[0] in "aeiou" else "a"
                raise CallbackRefused(
                    f"callback host {host!r} resolves to {text}, {article} {refused} address; webhooks go only to public "
                    "addresses unless the deployment lists the host in SSAH_WEBHOOK_ALLOWED_HOSTS"
                )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, tuple(addresses))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with SNI and certificate checks against the URL's host name."""

    def __init__(self, address: str, port: int, *, hostname: str, timeout: float):
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._hostname = hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._hostname)  # type: ignore[attr-defined]


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float) -> int:
    """POST ``body`` to the first checked address of ``target``; return the status (redirects not followed)."""
    address = target.addresses[0]
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(address, target.port, hostname=target.host, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(address, target.port, timeout=timeout)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    try:
        connection.request("POST", target.path, body=body, headers={"Host": host_header, **headers})
        response = connection.getresponse()
        response.read(64 * 1024)  # the answer is not used; read a little so the connection closes cleanly
        return response.status
    finally:
        connection.close()


def event_of(job: Job) -> str:
    return f"job.{job.status}"


def enqueue_delivery(session: Session, job: Job) -> WebhookDelivery | None:
    """Add the delivery of ``job``'s ending if it has a callback and none exists yet (in the caller's transaction)."""
    if job.callback_url is None or JobStatus(job.status) not in TERMINAL_STATUSES:
        return None
    event = event_of(job)
    exists = session.scalar(
        sa.select(WebhookDelivery.id).where(WebhookDelivery.job_id == job.id, WebhookDelivery.event == event)
    )
    if exists is not None:
        return None
    delivery = WebhookDelivery(
        id=uuid.uuid4(), tenant_id=job.tenant_id, job_id=job.id, event=event, url=job.callback_url, status="pending"
    )
    try:
        with session.begin_nested():
            session.add(delivery)
    except IntegrityError:  # another transaction added it meanwhile
        return None
    return delivery


def create_missing_deliveries(session: Session, *, limit: int = 100) -> int:
    """Add deliveries for finished jobs with a callback that have none (endings written outside the worker)."""
    missing = session.scalars(
        sa.select(Job)
        .where(
            Job.callback_url.is_not(None),
            Job.status.in_([s.value for s in TERMINAL_STATUSES]),
            ~sa.exists().where(WebhookDelivery.job_id == Job.id),
        )
        .order_by(Job.finished_at)
        .limit(limit)
    ).all()
    return sum(enqueue_delivery(session, job) is not None for job in missing)


def backoff(settings: Settings, attempts: int) -> timedelta:
    """Wait before try ``attempts + 1``: ``webhook_backoff_seconds`` doubled per failed try, capped."""
    seconds = settings.webhook_backoff_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.webhook_backoff_max_seconds))


def _claim(factory: sessionmaker[Session], settings: Settings, *, limit: int) -> list[tuple[uuid.UUID, int]]:
    """Lease up to ``limit`` due deliveries: (id, the attempt number this sender makes)."""
    now = utcnow()
    lease = timedelta(seconds=settings.webhook_timeout_seconds + 30)
    with factory.begin() as session:
        due = session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for delivery in due:
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.next_attempt_at = now + lease
        return [(delivery.id, delivery.attempts) for delivery in due]


def _payload(session: Session, delivery: WebhookDelivery) -> tuple[bytes, str | None]:
    from service.schemas.jobs import JobRead  # the same JSON as GET of the job

    job = session.get(Job, delivery.job_id)
    secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == delivery.tenant_id))
    return JobRead.model_validate(job).model_dump_json().encode(), secret


def send_one(factory: sessionmaker[Session], settings: Settings, delivery_id: uuid.UUID, attempt: int) -> str:
    """Make try ``attempt`` of a leased delivery and record it; return the delivery's status afterwards."""
    with factory() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return "gone"
        body, secret = _payload(session, delivery)
        url, event = delivery.url, delivery.event
    code: int | None = None
    error: str | None = None
    try:
        if secret is None:
            raise CallbackRefused("the tenant has no webhook secret (POST /v1/webhook-secret creates one)")
        target = check_callback_url(url, allowed_hosts=settings.webhook_allowed_hosts)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "SSAH-Event": event,
            "SSAH-Delivery": str(delivery_id),
            SIGNATURE_HEADER: sign(secret, body, timestamp=int(time.time())),
        }
        code = post(target, body, headers, timeout=settings.webhook_timeout_seconds)
        if not 200 <= code < 300:
            error = f"the receiver answered {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
    except CallbackRefused as exc:
        error = f"refused: {exc}"
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return _record(factory, settings, delivery_id, attempt, code=code, error=error)


def _record(
    factory: sessionmaker[Session],
    settings: Settings,
    delivery_id: uuid.UUID,
    attempt: int,
    *,
    code: int | None,
    error: str | None,
) -> str:
    now = utcnow()
    with factory.begin() as session:
        delivery = session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
            .with_for_update()
        ).one_or_none()
        if delivery is None:  # our lease ran out and another sender took over; its record wins
            return "superseded"
        delivery.last_status_code, delivery.last_error = code, error[:MAX_ERROR] if error else None
        if error is None:
            delivery.status, delivery.delivered_at = "succeeded", now
        elif attempt >= settings.webhook_max_attempts:
            delivery.status = "failed"
            log.warning("webhook %s failed for good after %d tries: %s", delivery_id, attempt, error)
        else:
            delivery.next_attempt_at = now + backoff(settings, attempt)
            log.info("webhook %s try %d failed (%s); next at %s", delivery_id, attempt, error, delivery.next_attempt_at)
        return delivery.status


def deliver_due(factory: sessionmaker[Session], settings: Settings, *, limit: int = 20) -> dict[str, Any]:
    """Send every delivery that is due now (up to ``limit``); return {delivery id: status afterwards}."""
    return {str(i): send_one(factory, settings, i, attempt) for i, attempt in _claim(factory, settings, limit=limit)}


def start_deliverer(factory: sessionmaker[Session], settings: Settings) -> threading.Event:
    """Run ``deliver_due`` every ``webhook_poll_seconds`` in a daemon thread; set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.webhook_poll_seconds):
            try:
                deliver_due(factory, settings)
            except Exception as exc:  # noqa: BLE001 - database down: try again next round
                log.warning("webhook round failed: %s: %s", type(exc).__name__, exc)

    threading.Thread(target=loop, name="ssah-webhooks", daemon=True).start()
    return stop
