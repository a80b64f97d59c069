"""The FastAPI application: ``create_app(settings)``; ``uvicorn --factory api.app:create_app`` reads the environment."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio
import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import ServiceContext, get_context
from api.metrics import LatencyMiddleware, create_registry
from api.routes import UPLOAD_OVERHEAD, router
from api.streaming import BLOCK_MS
from api.uploads import UploadError
from vos.errors import VosError
from workers.app import create_celery
from workers.jobs import JobStore, Storage
from workers.settings import ServiceSettings, get_settings

API_VERSION = "0.1.0"


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    store = JobStore(settings)
    registry, latency = create_registry(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Stream reads block for BLOCK_MS: the socket timeout must outlast them (redis-py's default is 5 s).
        aredis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=BLOCK_MS / 1000 + 10)
        app.state.context = ServiceContext(settings, store, aredis, Storage(settings.storage_url),
                                           create_celery(settings), registry, latency)
        yield
        await aredis.aclose()
        store.redis.close()

    app = FastAPI(title="seem-vos", version=API_VERSION, lifespan=lifespan,
                  description="Video object segmentation: upload a video with prompts, stream the masks, download results.")
    app.add_middleware(LatencyMiddleware, histogram=latency)
    app.include_router(router, prefix="/v1", max_body_size=settings.max_upload_bytes + UPLOAD_OVERHEAD)
    _add_error_handlers(app, settings)
    _add_health_routes(app)
    return app


def _add_error_handlers(app: FastAPI, settings: ServiceSettings) -> None:
    @app.exception_handler(VosError)
    async def vos_error(request: Request, error: VosError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail
        if error.status_code == 413 and detail == "Content Too Large":  # Starlette's body limit, said plainly
            detail = f"the upload is larger than the limit of {settings.max_upload_bytes} bytes"
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(redis.RedisError)
    async def redis_error(request: Request, error: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"the job store is unavailable: {error}"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        messages = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return JSONResponse({"detail": "; ".join(messages)}, status_code=422)


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (it does not check Redis or workers: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Redis or every worker is unreachable"}})
    def readyz(context: ServiceContext = Depends(get_context)) -> JSONResponse:
        """Ready when Redis answers and at least one worker sent a heartbeat recently."""
        try:
            context.store.redis.ping()
            workers = context.store.live_workers()
        except redis.RedisError as error:
            return JSONResponse({"status": "unavailable", "detail": f"Redis unreachable: {error}"}, status_code=503)
        if workers == 0:
            return JSONResponse({"status": "unavailable", "detail": "no worker is running"}, status_code=503)
        return JSONResponse({"status": "ready", "workers": workers})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(context: ServiceContext = Depends(get_context)) -> PlainTextResponse:
        """Prometheus metrics."""
        body = await anyio.to_thread.run_sync(generate_latest, context.registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
