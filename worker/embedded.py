"""The embedded worker of ``ssah serve`` on one machine: a thread that runs committed jobs from the database.

No broker: it polls for the oldest queued job (or a running one whose heartbeat went stale, i.e.
an earlier process died mid-job) and runs it with the same ``run_job`` and bodies as Celery does.
One job at a time.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from service import queries, webhooks
from service.models import utcnow
from service.settings import Settings
from worker.jobs import BODIES
from worker.runner import run_job
from worker.store import make_store

log = logging.getLogger(__name__)


class EmbeddedWorker(threading.Thread):
    """Runs jobs until ``stop()``; ``poll_seconds`` between looks at an empty queue."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], *, poll_seconds: float = 1.0):
        super().__init__(name="ssah-embedded-worker", daemon=True)
        self.settings, self.factory, self.poll_seconds = settings, factory, poll_seconds
        self.store = make_store(settings)
        self._stop_event = threading.Event()
        self._orphans: set = set()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        # This process owns the database: whatever is "running" now was left by a process that died.
        with self.factory() as session:
            self._orphans = queries.running_job_ids(session)
        while not self._stop_event.is_set():
            try:
                ran = self.run_one()
                ran = bool(webhooks.deliver_due(self.factory, self.settings)) or ran
            except Exception:
                log.exception("embedded worker: job crashed the loop; going on")
                ran = False
            if not ran:
                self._stop_event.wait(self.poll_seconds)

    def run_one(self) -> bool:
        """Run the next job if there is one; return whether one was found."""
        stale = utcnow() - timedelta(seconds=self.settings.stale_seconds)
        with self.factory() as session:
            row = queries.next_runnable_job(session, stale_before=stale, orphans=self._orphans)
        if row is None:
            return False
        takeover = row.id in self._orphans
        self._orphans.discard(row.id)
        outcome = run_job(
            row.id,
            row.kind,
            BODIES[row.kind],
            settings=self.settings,
            factory=self.factory,
            store=self.store,
            takeover=takeover,
        )
        log.info("embedded worker: job %s %s", row.id, outcome)
        return True
