"""DynamicBatcher: merges concurrent requests, keeps order, splits big ones, propagates errors."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from services.embedder.batcher import BatchStats, DynamicBatcher, QueueFull


class Recorder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay, self.fail = delay, fail
        self.threads: set[str] = set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(x.shape[0])
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("forward failed")
        return x[:, :1] * 10  # row-wise, so every request can check its own rows


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(3, 1)


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    rec, stats = Recorder(delay=0.02), []

    async def main():
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_s=0.05, on_batch=stats.append)
        outs = await asyncio.gather(*(b.submit(rows(i * 2, 2)) for i in range(10)))
        await b.close()
        return outs

    outs = asyncio.run(main())
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out[:, 0], rows(i * 2, 2)[:, 0] * 10)
    assert sum(rec.sizes) == 20 and max(rec.sizes) <= 8 and len(rec.sizes) <= 4
    assert all(isinstance(s, BatchStats) and s.rows <= 8 for s in stats) and sum(s.requests for s in stats) == 10
    assert all(t.startswith("forward") for t in rec.threads)  # never on the event loop


def test_request_larger_than_a_batch_is_split_in_order():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch_size=4, max_wait_s=0.0)
        out = await b.submit(rows(0, 10))
        await b.close()
        return out

    out = asyncio.run(main())
    np.testing.assert_array_equal(out[:, 0], np.arange(10) * 10)
    assert sorted(rec.sizes) == [2, 4, 4]


def test_lone_request_does_not_wait_when_nobody_else_is_coming():
    async def main():
        b = DynamicBatcher(Recorder(), max_batch_size=32, max_wait_s=2.0, in_flight=lambda: 1)
        t = time.perf_counter()
        await b.submit(rows(0, 1))
        waited = time.perf_counter() - t
        await b.close()
        return waited

    assert asyncio.run(main()) < 1.0


def test_requests_in_a_running_batch_are_not_waited_for():
    """Two requests in flight, one already in a running forward: the other starts its own batch at
    once instead of waiting max_wait for company that is not coming."""
    rec = Recorder(delay=0.3)

    async def main():
        in_flight = [1]
        b = DynamicBatcher(rec, max_batch_size=32, max_wait_s=2.0, max_concurrent_batches=2,
                           in_flight=lambda: in_flight[0])
        first = asyncio.ensure_future(b.submit(rows(0, 1)))
        await asyncio.sleep(0.05)  # alone, so it runs at once; then a second request arrives
        in_flight[0] = 2
        t = time.perf_counter()
        await b.submit(rows(1, 1))
        waited = time.perf_counter() - t
        await first
        await b.close()
        return waited

    assert asyncio.run(main()) < 1.0  # the forward's 0.3 s, not max_wait's 2 s
    assert rec.sizes == [1, 1]


def test_waits_up_to_max_wait_for_company():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch_size=32, max_wait_s=0.2)
        first = asyncio.ensure_future(b.submit(rows(0, 1)))
        await asyncio.sleep(0.05)
        second = await b.submit(rows(1, 1))
        await first
        await b.close()
        return second

    asyncio.run(main())
    assert rec.sizes == [2]


def test_forward_error_reaches_every_request_and_the_batcher_recovers():
    rec = Recorder(fail=True)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_s=0.01)
        results = await asyncio.gather(*(b.submit(rows(i, 1)) for i in range(3)), return_exceptions=True)
        rec.fail = False
        ok = await b.submit(rows(5, 1))
        await b.close()
        return results, ok

    results, ok = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "forward failed" in str(r) for r in results)
    assert ok[0, 0] == 50


def test_queue_limit():
    async def main():
        b = DynamicBatcher(Recorder(delay=0.2), max_batch_size=2, max_wait_s=0.0, max_queue_rows=4)
        tasks = [asyncio.ensure_future(b.submit(rows(i, 2))) for i in range(2)]  # one runs, one queued
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await b.submit(rows(0, 4))
        await asyncio.gather(*tasks)
        await b.close()

    asyncio.run(main())


def test_request_over_the_queue_limit_is_refused_whole():
    """Split into batch-sized parts, the request is checked once as a whole: no part runs."""
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch_size=2, max_wait_s=0.0, max_queue_rows=4)
        with pytest.raises(QueueFull, match="this request has 6"):
            await b.submit(rows(0, 6))
        await asyncio.sleep(0.1)  # the batching loop had its chance to run anything queued
        out = await b.submit(rows(0, 4))  # what fits is still served
        await b.close()
        return out

    out = asyncio.run(main())
    np.testing.assert_array_equal(out[:, 0], np.arange(4) * 10)
    assert rec.sizes == [2, 2]  # only the second request's parts


def test_split_request_drops_its_other_parts_when_one_fails():
    rec = Recorder(fail=True)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=2, max_wait_s=0.0)
        with pytest.raises(RuntimeError, match="forward failed"):
            await b.submit(rows(0, 6))
        await asyncio.sleep(0.1)
        queued = b.queued_rows
        await b.close()
        return queued

    assert asyncio.run(main()) == 0
    assert rec.sizes == [2]  # the parts after the failed one never ran
