"""Prometheus metrics: request latency measured here, job counts and queue depth read from Redis at scrape time.

Job and frame counts come from Redis rather than from process counters, so every API replica reports the
same totals whichever worker did the work.
"""

from __future__ import annotations

import time
from typing import Iterator

import redis
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.jobs import JobState, JobStore

QUEUES = ("cpu", "gpu")


class JobsCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except redis.RedisError:
            return  # Redis down: /readyz reports it; the latency metrics are still worth serving

    def _collect(self) -> Iterator[Metric]:
        keys, client = self.store.keys, self.store.redis
        jobs = GaugeMetricFamily("vos_jobs", "Jobs by state (finished ones until retention deletes them)", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], client.scard(keys.state_set(state)))
        yield jobs
        frames = CounterMetricFamily("vos_frames_processed", "Frames tracked and published by all workers")
        frames.add_metric([], int(client.get(keys.frames_counter) or 0))
        yield frames
        depth = GaugeMetricFamily("vos_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], client.llen(keys.queue(queue)))
        yield depth
        workers = GaugeMetricFamily("vos_workers_alive", "Workers that sent a heartbeat in the last 15 s")
        workers.add_metric([], self.store.live_workers())
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
                self.histogram.labels(scope["method"], path, str(message["status"])).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, timed_send)


def create_registry(store: JobStore) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(JobsCollector(store))
    latency = Histogram("vos_http_request_duration_seconds", "API request latency to the response headers",
                        ["method", "route", "status"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    return registry, latency
