"""The FastAPI application: ``create_app(settings)``; ``uvicorn --factory api.app:create_app`` reads the environment.

Routers are included in :func:`create_app` one per feature (jobs today; sessions and the web page beside it),
all sharing the service context built in the lifespan. :func:`uvicorn_config` holds the server's limits
(keep-alive timeout, concurrency) so every way of starting the API (``vos serve``, Docker, tests) gets them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
import redis
import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import routes
from api.deps import ServiceContext, get_context
from api.limits import GuardMiddleware, idle_closing_protocol
from api.metrics import LatencyMiddleware, create_registry
from api.sessions import mount_studio
from api.streaming import BLOCK_MS
from api.uploads import UploadError
from vos.errors import VosError
from workers.core.settings import QUEUES, ServiceSettings, get_settings
from workers.core.storage import Storage, remove_stale_upload_dirs
from workers.core.store import AsyncJobStore, JobStore

API_VERSION = "0.2.0"
API_REDIS_RETRY_S = 5.0  # the API answers 503 after this; workers keep retrying for redis_retry_s
STORE_UNAVAILABLE = "the job store (Redis) is unavailable; try again shortly"
log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_settings = settings.model_copy(update={"redis_retry_s": min(settings.redis_retry_s, API_REDIS_RETRY_S)})
    store = JobStore(api_settings)
    registry, latency = create_registry(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for path in remove_stale_upload_dirs():
            log.warning("removed %s, left by an API process that died during an upload", path)
        from workers.app import RUN_JOB, create_celery  # Celery only to send tasks; no task code is imported

        celery = create_celery(settings)
        astore = AsyncJobStore(api_settings, BLOCK_MS / 1000)
        app.state.context = ServiceContext(
            settings, store, astore, Storage(settings.storage_url),
            lambda job_id, queue: celery.send_task(RUN_JOB, args=[job_id], queue=queue),
            registry, latency)
        yield
        await astore.close()
        store.redis.close()

    app = FastAPI(title="seem-vos", version=API_VERSION, lifespan=lifespan,
                  description="Video object segmentation: upload a video with prompts, stream the masks, "
                              "download results.")
    app.add_middleware(LatencyMiddleware, histogram=latency)
    app.add_middleware(GuardMiddleware, settings=settings,
                       max_body_bytes=settings.max_upload_bytes + routes.UPLOAD_OVERHEAD)
    app.include_router(routes.router, prefix="/v1")
    _add_error_handlers(app)
    _add_health_routes(app)
    mount_studio(app, settings)  # /v1/sessions and the studio page at /, after every route above
    return app


def uvicorn_config(app: FastAPI, settings: ServiceSettings, host: str, port: int, **options: object) -> uvicorn.Config:
    """The server's connection limits: idle connections close (new ones too), and a flood gets 503s, not a hang."""
    return uvicorn.Config(app, host=host, port=port, timeout_keep_alive=int(settings.http_keep_alive_s),
                          limit_concurrency=settings.http_max_concurrency,
                          http=idle_closing_protocol(settings.http_body_timeout_s), **options)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VosError)
    async def vos_error(request: Request, error: VosError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(redis.RedisError)
    async def redis_error(request: Request, error: redis.RedisError) -> JSONResponse:
        log.error("Redis error on %s %s: %r", request.method, request.url.path, error)  # host and port stay here
        return JSONResponse({"detail": STORE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        messages = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return JSONResponse({"detail": "; ".join(messages)}, status_code=422)


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (it does not check Redis or workers: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Redis or the workers are unreachable"}})
    def readyz(context: Annotated[ServiceContext, Depends(get_context)],
               queue: Annotated[str | None, Query(pattern="^(cpu|gpu)$",
                                                  description="ready only if this queue has a worker")] = None,
               ) -> JSONResponse:
        """Ready when Redis answers and a worker serves some queue (or the queue asked for); workers per queue."""
        try:
            workers = context.store.live_workers()
        except redis.RedisError as error:
            log.error("readiness: Redis unreachable: %r", error)
            return JSONResponse({"status": "unavailable", "detail": STORE_UNAVAILABLE}, status_code=503)
        needed = [queue] if queue else list(QUEUES)
        if not any(workers[name] for name in needed):
            detail = f"no worker serves the {queue!r} queue" if queue else "no worker is running"
            return JSONResponse({"status": "unavailable", "detail": detail, "workers": workers}, status_code=503)
        return JSONResponse({"status": "ready", "workers": workers})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(context: Annotated[ServiceContext, Depends(get_context)]) -> PlainTextResponse:
        """Prometheus metrics."""
        body = await anyio.to_thread.run_sync(generate_latest, context.registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
