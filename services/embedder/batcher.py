"""Dynamic batching across concurrent requests (asyncio, inside the server process).

Requests put [n, ...] arrays on a queue; one loop takes up to `max_batch_size` rows, runs the
blocking forward in a worker thread and hands each request its slice of the result.

When to run: a batch starts as soon as `max_batch_size` rows are queued, or `max_wait_s` after
its oldest row arrived, or at once when every request the server is handling is already queued
or in a running batch (`in_flight()`; nobody else is coming, so waiting would only add latency).
While a batch runs, the next one fills up, so under load batches form without any waiting.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class QueueFull(RuntimeError):
    """More rows are queued than the batcher accepts (back-pressure)."""


@dataclass
class BatchStats:
    rows: int
    requests: int
    queue_wait_s: float  # oldest row's wait
    run_s: float


@dataclass
class _Job:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int = 32,
                 max_wait_s: float = 0.005, max_concurrent_batches: int = 1, max_queue_rows: int = 4096,
                 in_flight: Callable[[], int] | None = None,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_concurrent_batches = max_concurrent_batches
        self.max_queue_rows = max_queue_rows
        self._in_flight = in_flight
        self._on_batch = on_batch
        self._jobs: collections.deque[_Job] = collections.deque()
        self._queued_rows = 0
        self._running_jobs = 0  # in batches being run: in flight, but not coming
        self._executor = concurrent.futures.ThreadPoolExecutor(max_concurrent_batches, thread_name_prefix="forward")
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closed = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # -- client side ---------------------------------------------------------------------

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Rows of `x` -> rows of the output, in order (split when larger than a batch).

        The whole request is checked against the queue limit and queued at once (its parts, when
        split, with no await in between): it is refused or queued entirely, never half run."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        n = x.shape[0]
        if self._queued_rows + n > self.max_queue_rows:
            raise QueueFull(f"{self._queued_rows} images queued, this request has {n} (limit {self.max_queue_rows})")
        self._ensure_started()
        loop = asyncio.get_running_loop()
        now = loop.time()
        if n <= self.max_batch_size:
            job = _Job(x, loop.create_future(), now)
            self._jobs.append(job)
            self._queued_rows += n
            self._wake.set()
            return await job.future
        jobs = [_Job(x[i:i + self.max_batch_size], loop.create_future(), now)
                for i in range(0, n, self.max_batch_size)]
        self._jobs.extend(jobs)
        self._queued_rows += n
        self._wake.set()
        try:
            return np.concatenate([await j.future for j in jobs])
        finally:
            for j in jobs:  # a part failed or the client went away: the other parts need not run
                if not j.future.cancel() and not j.future.cancelled():
                    j.future.exception()  # already answered: mark its error (if any) retrieved

    # -- batching loop -------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._slots = asyncio.Semaphore(self.max_concurrent_batches)
            self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop(), name="batcher")

    def _everyone_queued(self) -> bool:
        return self._in_flight is not None and self._in_flight() - self._running_jobs <= len(self._jobs)

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._slots.acquire()
            try:
                while not self._jobs:
                    self._wake.clear()
                    await self._wake.wait()
                deadline = self._jobs[0].enqueued + self.max_wait_s
                while self._queued_rows < self.max_batch_size and not self._everyone_queued():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except TimeoutError:
                        break
                jobs = self._take()
            except BaseException:
                self._slots.release()
                raise
            if not jobs:
                self._slots.release()
                continue
            self._running_jobs += len(jobs)
            task = loop.create_task(self._run_batch(jobs, loop.time() - jobs[0].enqueued))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Job]:
        jobs: list[_Job] = []
        rows = 0
        while self._jobs:
            job = self._jobs[0]
            n = job.x.shape[0]
            if jobs and rows + n > self.max_batch_size:
                break
            self._jobs.popleft()
            self._queued_rows -= n
            if job.future.done():  # the client went away
                continue
            jobs.append(job)
            rows += n
        return jobs

    def _forward(self, xs: list[np.ndarray]) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        return self._run(x), time.perf_counter() - t

    async def _run_batch(self, jobs: list[_Job], waited_s: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                out, run_s = await loop.run_in_executor(self._executor, self._forward, [j.x for j in jobs])
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                return
            finally:
                self._slots.release()
            start = 0
            for j in jobs:
                n = j.x.shape[0]
                if not j.future.done():
                    j.future.set_result(out[start:start + n])
                start += n
            if self._on_batch is not None:
                self._on_batch(BatchStats(rows=start, requests=len(jobs), queue_wait_s=waited_s, run_s=run_s))
        finally:
            # these requests are answered, not coming: once they have left (their tasks run first,
            # they were scheduled first) the loop looks again at whether everyone left is queued
            self._running_jobs -= len(jobs)
            if self._wake is not None:
                loop.call_soon(self._wake.set)

    async def close(self) -> None:
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for j in self._jobs:
            if not j.future.done():
                j.future.set_exception(RuntimeError("embedder is shutting down"))
        self._jobs.clear()
        self._queued_rows = 0
        self._executor.shutdown(wait=False)
