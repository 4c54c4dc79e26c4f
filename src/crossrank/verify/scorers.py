"""The scorers ``crossrank verify`` compares: crossrank configurations and running services.

A scorer is given as a spec string, ``[NAME=]key:value[,key:value...]``:

- a crossrank configuration of the checkpoint under test: keys ``backend``, ``dtype``,
  ``quantize``, ``device``, ``max_length``, ``model`` (default: the ``--model`` checkpoint),
  e.g. ``onnx-int8=backend:onnx,quantize:int8`` or ``dtype:bf16``;
- a running service: ``url`` and ``api`` (a dialect of :data:`crossrank.verify.clients.DIALECTS`),
  optional ``key`` (API key) or ``key_env`` (the variable holding it), ``model`` (sent in the
  request), ``batch`` (documents per request, 32), ``scale`` (``logit`` / ``sigmoid``: what
  the service answers, detected when not given), e.g.
  ``url:http://127.0.0.1:8080,api:tei`` or ``llama=url:http://h:8081/v1/rerank,api:llamacpp``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from crossrank.errors import InputError

logger = logging.getLogger(__name__)

LOCAL_KEYS = ("backend", "dtype", "quantize", "device", "max_length", "model")
SERVICE_KEYS = ("url", "api", "key", "key_env", "model", "batch", "scale")
SCALES = ("logit", "sigmoid")


class Scorer(Protocol):
    """Scores one query's documents; what ``verify`` compares."""

    #: the name in the report
    name: str
    #: ``"logit"`` / ``"sigmoid"`` when known, None to detect from the first answer
    scale: str | None
    #: most documents per call (None: a whole query group at once)
    batch_size: int | None
    #: True for an HTTP service (scored concurrently), False for an in-process model
    remote: bool

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """One score per document, in their order."""
        ...

    def describe(self) -> dict[str, object]:
        """What the report says about this scorer (its spec, backend, URL...)."""
        ...

    def close(self) -> None:
        """Release connections or models."""
        ...


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed spec: a ``name`` and its ``key -> value`` options."""

    name: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def is_service(self) -> bool:
        """True for a running service (the spec has ``url``)."""
        return "url" in self.options


def parse_spec(text: str) -> ScorerSpec:
    """Parse ``[NAME=]key:value[,key:value...]`` (see the module's docstring).

    Raises:
        InputError: an empty spec, a part without ``:``, an unknown or repeated key, a service
            without ``api`` or with an unknown dialect or scale.
    """
    from crossrank.verify.clients import DIALECTS

    name, _, body = text.partition("=") if "=" in text.split(":", 1)[0] else ("", "", text)
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition(":")
        key = key.strip().replace("-", "_")
        if not sep or not value:
            raise InputError(f"scorer {text!r}: {part!r} is not key:value")
        if key in options:
            raise InputError(f"scorer {text!r}: {key!r} given twice")
        options[key] = value.strip()
    if not options:
        raise InputError(f"scorer {text!r}: empty; give key:value options (e.g. dtype:bf16)")
    allowed = SERVICE_KEYS if "url" in options else LOCAL_KEYS
    for key in options:
        if key not in allowed:
            kind = "a service (url:...)" if "url" in options else "a crossrank configuration"
            raise InputError(
                f"scorer {text!r}: unknown key {key!r} for {kind}; use {', '.join(allowed)}"
            )
    if "url" in options:
        api = options.get("api")
        if api not in DIALECTS:
            raise InputError(
                f"scorer {text!r}: api:{api or '?'} is not one of {', '.join(DIALECTS)}"
            )
        if options.get("scale", "logit") not in SCALES:
            raise InputError(f"scorer {text!r}: scale must be logit or sigmoid")
        for key in ("batch",):
            if key in options and not (options[key].isdigit() and int(options[key]) > 0):
                raise InputError(f"scorer {text!r}: {key} must be a positive integer")
    elif "max_length" in options and not options["max_length"].isdigit():
        raise InputError(f"scorer {text!r}: max_length must be a positive integer")
    return ScorerSpec(name or _default_name(options), options, text)


def _default_name(options: dict[str, str]) -> str:
    if "url" in options:
        from urllib.parse import urlsplit

        return f"{options['api']}@{urlsplit(options['url']).netloc or options['url']}"
    parts = [options.get("backend", "torch"), options.get("dtype", "fp32")]
    if "quantize" in options:
        parts[-1] = options["quantize"]
    parts += [options[k] for k in ("device", "max_length") if k in options]
    return "-".join(parts)


class LocalScorer:
    """A crossrank configuration of a checkpoint, in this process (raw logits)."""

    remote = False
    scale: str | None = "logit"
    batch_size: int | None = None

    def __init__(self, name: str, model: str, **options: object) -> None:
        from crossrank.reranker import Reranker

        self.name = name
        self.options = {"model": model, **options}
        self.reranker = Reranker(model, normalize=False, show_progress=False, **options)

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        return self.reranker.compute_score([(query, d) for d in documents])

    def describe(self) -> dict[str, object]:
        rr = self.reranker
        return {"kind": "crossrank", **self.options, "backend_in_use": rr.backend.name}

    def close(self) -> None:
        del self.reranker


def build_scorer(
    spec: ScorerSpec,
    *,
    model: str,
    device: str | None = None,
    max_length: int = 512,
    timeout: float = 60.0,
    retries: int = 5,
) -> Scorer:
    """The scorer a spec names: a :class:`LocalScorer` (``model``, ``device`` and
    ``max_length`` are the defaults of its options) or a
    :class:`~crossrank.verify.clients.ServiceScorer`."""
    o = spec.options
    if spec.is_service:
        from crossrank.verify.clients import ServiceScorer

        key = o.get("key")
        if "key_env" in o:
            key = os.environ.get(o["key_env"])
            if not key:
                raise InputError(f"scorer {spec.name!r}: ${o['key_env']} is not set")
        return ServiceScorer(
            spec.name,
            o["url"],
            o["api"],
            api_key=key,
            model=o.get("model"),
            batch_size=int(o.get("batch", 32)),
            scale=o.get("scale"),
            timeout=timeout,
            retries=retries,
        )
    options: dict[str, object] = {
        "backend": o.get("backend", "torch"),
        "dtype": o.get("dtype"),
        "quantize": o.get("quantize"),
        "device": o.get("device", device),
        "max_length": int(o.get("max_length", max_length)),
    }
    logger.info("loading %s: %s", spec.name, options)
    return LocalScorer(spec.name, o.get("model", model), **options)
