"""The service routes: ``GET`` / ``HEAD /health``, ``/info`` (derived from the settings) and ``/metrics``."""

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, create_model

from crossrank._version import __version__
from crossrank.server.service import Service
from crossrank.server.settings import info_settings, info_types


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "failed", "stopping"]


#: what /info reports besides the settings: the loaded model and the scheduler
RUNTIME_INFO: dict[str, Any] = {
    "model_id": str,
    "model_dir": str | None,
    "backend": str | None,
    "backend_choice": dict[str, Any] | None,
    "device": str | None,
    "dtype": str | None,
    "max_length": int | None,
    "max_batch_tokens": int | None,
    "ready": bool,
    "version": str,
}

InfoResponse = create_model(
    "InfoResponse",
    **{name: (tp, ...) for name, tp in {**info_types(), **RUNTIME_INFO}.items()},
)


def info(service: Service) -> dict[str, Any]:
    """The body of ``GET /info``: the settings, with the values in use where the model decides."""
    s, rr, sched = service.settings, service.reranker, service.scheduler
    out = info_settings(s)
    out.update(
        model_id=service.model_name,
        model_dir=str(rr.model_dir) if rr is not None else None,
        backend=rr.backend.name if rr is not None else None,
        backend_choice=choice(rr),
        device=_text(rr.device if rr is not None else s.options.get("device")),
        dtype=_text(rr.dtype if rr is not None else s.options.get("dtype")),
        max_length=rr.max_length if rr is not None else s.options.get("max_length", 512),
        max_batch_tokens=sched.max_batch_tokens if sched is not None else s.max_batch_tokens,
        ready=service.ready,
        version=__version__,
    )
    return out


def _text(value: Any) -> str | None:
    """A device or dtype as /info shows it (``cpu``, ``float32``)."""
    return None if value is None else str(value).removeprefix("torch.")


def choice(rr: Any) -> dict[str, Any] | None:
    """What ``backend="auto"`` chose, why, and each candidate's measured speed and fidelity
    (None for an explicit backend)."""
    picked = rr.backend_choice if rr is not None else None
    return picked.as_dict() if picked is not None else None


def router(service: Service) -> APIRouter:
    api = APIRouter(tags=["service"])

    @api.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> Any:
        if service.ready and not service.stopping:
            return {"status": "ok"}
        status = "stopping" if service.stopping else "failed" if service.failed else "loading"
        return JSONResponse({"status": status}, status_code=503)

    @api.head("/health", response_class=Response, responses={503: {}})
    async def health_head() -> Response:
        """``GET /health``'s status with an empty body (for load balancers' HEAD probes)."""
        return Response(status_code=200 if service.ready and not service.stopping else 503)

    @api.get("/info", response_model=InfoResponse)
    async def get_info() -> Any:
        return info(service)

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Any:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    return api
