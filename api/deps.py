"""What request handlers share: the service context created at startup, and the API-key dependency."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Histogram

from api.limits import API_KEY_HEADER
from workers.core.maintenance import SendJob
from workers.core.settings import ServiceSettings
from workers.core.storage import Storage
from workers.core.store import AsyncJobStore, JobStore


@dataclass
class ServiceContext:
    settings: ServiceSettings
    store: JobStore  # synchronous Redis, used from the thread pool
    astore: AsyncJobStore  # asynchronous Redis, for status polls and blocking stream reads
    storage: Storage
    send_job: SendJob
    registry: CollectorRegistry
    latency: Histogram


async def get_context(request: Request) -> ServiceContext:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a costly hop on the most polled routes
    return request.app.state.context


_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                               description="required when the server sets VOS_API_KEY")


async def require_api_key(key: str | None = Security(_api_key_header)) -> None:
    """Documents the key in the OpenAPI schema; :class:`api.limits.GuardMiddleware` checks it before the body."""
