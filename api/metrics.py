"""Prometheus metrics: request latency measured here, job counts and queue depth read from Redis at scrape time.

Job and frame counts come from Redis rather than from process counters, so every API replica reports the
same totals whichever worker did the work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.core.settings import QUEUES
from workers.core.store import JobStore


class JobsCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except redis.RedisError:
            return  # Redis down: /readyz reports it; the latency metrics are still worth serving

    def _collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("vos_jobs", "Jobs by state (finished ones until retention deletes them)",
                                 labels=["state"])
        for state, count in self.store.state_counts().items():
            jobs.add_metric([state.value], count)
        yield jobs
        frames = CounterMetricFamily("vos_frames_processed", "Frames tracked and published by all workers")
        frames.add_metric([], self.store.frames_processed())
        yield frames
        depth = GaugeMetricFamily("vos_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], self.store.queue_depth(queue))
        yield depth
        workers = GaugeMetricFamily("vos_workers_alive", "Workers with a recent heartbeat, per queue", labels=["queue"])
        for queue, count in self.store.live_workers().items():
            workers.add_metric([queue], count)
        yield workers


class LatencyMiddleware:
    """Records each request's latency to its response headers (for streams: time to the first byte)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                # The route template, not the path: job ids would make one time series per job.
                path = getattr(route, "path", "unmatched")
                elapsed = time.perf_counter() - start
                self.histogram.labels(scope["method"], path, str(message["status"])).observe(elapsed)
            await send(message)

        await self.app(scope, receive, timed_send)


def create_registry(store: JobStore) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(JobsCollector(store))
    latency = Histogram("vos_http_request_duration_seconds", "API request latency to the response headers",
                        ["method", "route", "status"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    return registry, latency
