"""What request handlers share: the service context created at startup, and the API-key check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Histogram

from workers.jobs import JobStore, Storage
from workers.settings import ServiceSettings


@dataclass
class ServiceContext:
    settings: ServiceSettings
    store: JobStore  # synchronous Redis, used from the thread pool
    aredis: aioredis.Redis  # asynchronous Redis, for long blocking stream reads
    storage: Storage
    celery: Celery
    registry: CollectorRegistry
    latency: Histogram


def get_context(request: Request) -> ServiceContext:
    return request.app.state.context


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when the server sets VOS_API_KEY")


def require_api_key(key: str | None = Security(_api_key_header), context: ServiceContext = Depends(get_context)) -> None:
    expected = context.settings.api_key
    if expected and not (key and secrets.compare_digest(key.encode(), expected.encode())):
        raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key header")
