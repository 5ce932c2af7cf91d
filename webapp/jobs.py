"""Background jobs: one worker thread, a bounded queue, progress, results kept for a while.

Clip analysis takes seconds; requests only enqueue it and return, pages poll the job. Jobs are
keyed (run + clip hash), so the same clip submitted twice is one job; a full queue is refused
(503) rather than silently dropped, and only the newest `keep` finished jobs stay in memory
(results live on disk in the run dir, so a permalink outlives its job).
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

Progress = Callable[[float, str], None]


class QueueFull(RuntimeError):
    """The job queue is at its bound; the client should retry later."""


@dataclass
class Job:
    """One unit of background work and what is known about it."""

    id: str
    key: str
    fn: Callable[[Progress], Any] | None
    state: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    message: str = "queued"
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def public(self, position: int | None = None) -> dict:
        """JSON view of the job (no callable, no result body)."""
        return {"id": self.id, "key": self.key, "state": self.state, "progress": round(self.progress, 3),
                "message": self.message, "error": self.error, "queue_position": position,
                "created": self.created, "started": self.started, "finished": self.finished}


class JobQueue:
    """A single worker thread draining a bounded FIFO of keyed jobs."""

    def __init__(self, maxsize: int = 32, keep: int = 200):
        self._q: queue.Queue[Job | None] = queue.Queue(maxsize=maxsize)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._by_key: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._keep = keep
        self._thread = threading.Thread(target=self._work, name="mmit-webapp-jobs", daemon=True)
        self._thread.start()

    def submit(self, key: str, fn: Callable[[Progress], Any]) -> Job:
        """Queue `fn(progress)` under `key`; an unfinished or successful job of that key is returned instead."""
        with self._lock:
            old = self._jobs.get(self._by_key.get(key, ""))
            if old is not None and old.state != "failed":
                return old
            job = Job(id=f"j{next(self._ids)}", key=key, fn=fn)
            try:
                self._q.put_nowait(job)
            except queue.Full:
                raise QueueFull(f"{self._q.maxsize} jobs are waiting; try again in a moment") from None
            self._jobs[job.id] = job
            self._by_key[key] = job.id
            self._evict()
            return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if still remembered."""
        with self._lock:
            return self._jobs.get(job_id)

    def by_key(self, key: str) -> Job | None:
        """The latest job submitted under `key`, if still remembered."""
        with self._lock:
            return self._jobs.get(self._by_key.get(key, ""))

    def position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of this one (None once it runs)."""
        if job.state != "queued":
            return None
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state == "queued" and j.created < job.created)

    def stats(self) -> dict:
        """Counts per state and the queue bound."""
        with self._lock:
            states = [j.state for j in self._jobs.values()]
        return {"maxsize": self._q.maxsize, **{s: states.count(s) for s in ("queued", "running", "done", "failed")}}

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the job it is running (queued jobs are abandoned)."""
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._q.put(None)
        self._thread.join(timeout)

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond `keep` (caller holds the lock)."""
        finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
        for j in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[j.id]
            if self._by_key.get(j.key) == j.id:
                del self._by_key[j.key]

    def _work(self) -> None:
        """Worker loop: run jobs one at a time, recording progress, result or error."""
        while True:
            job = self._q.get()
            if job is None:
                return
            job.state, job.started, job.message = "running", time.time(), "starting"

            def progress(fraction: float, message: str, job: Job = job) -> None:
                job.progress, job.message = max(0.0, min(1.0, float(fraction))), message

            try:
                assert job.fn is not None
                job.result = job.fn(progress)
                job.state, job.progress, job.message = "done", 1.0, "done"
            except Exception as e:  # a failed job must not kill the worker
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
                job.message = "failed"
            finally:
                job.finished = time.time()
                job.fn = None  # free the closure (and the clip data it holds)
                with self._lock:
                    self._evict()
