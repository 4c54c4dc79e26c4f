"""Prometheus metrics of the service, in a registry of their own (one per app)."""

from __future__ import annotations

from crossrank.errors import missing_extra

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_POWERS = tuple(float(2**i) for i in range(0, 15))


class Metrics:
    """The service's metrics; ``render()`` gives the text exposition for ``GET /metrics``.

    Example:
        >>> m = Metrics()  # doctest: +SKIP
        >>> m.requests.labels(route="/rerank", status="200").inc()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:  # pragma: no cover - depends on the environment
            raise missing_extra("server", "prometheus_client") from None
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "crossrank_requests_total",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=reg,
        )
        self.request_duration = Histogram(
            "crossrank_request_duration_seconds",
            "HTTP request latency, from first byte in to response sent",
            ["route"],
            buckets=_LATENCY,
            registry=reg,
        )
        self.queue_duration = Histogram(
            "crossrank_queue_duration_seconds",
            "Time a request's pairs wait in the queue before their first batch starts",
            buckets=_LATENCY,
            registry=reg,
        )
        self.inference_duration = Histogram(
            "crossrank_inference_duration_seconds",
            "Forward-pass time of one batch",
            buckets=_LATENCY,
            registry=reg,
        )
        self.tokenize_duration = Histogram(
            "crossrank_tokenize_duration_seconds",
            "Tokenization time of one request",
            buckets=_LATENCY,
            registry=reg,
        )
        self.batch_pairs = Histogram(
            "crossrank_batch_pairs",
            "Pairs in one forward pass",
            buckets=_POWERS,
            registry=reg,
        )
        self.batch_tokens = Histogram(
            "crossrank_batch_tokens",
            "Padded tokens in one forward pass",
            buckets=tuple(float(2**i) for i in range(4, 20)),
            registry=reg,
        )
        self.batch_requests = Histogram(
            "crossrank_batch_requests",
            "Distinct requests whose pairs share one forward pass",
            buckets=_POWERS,
            registry=reg,
        )
        self.pairs = Counter("crossrank_pairs_total", "Pairs scored", registry=reg)
        self.queue_pairs = Gauge(
            "crossrank_queue_pairs", "Pairs admitted and not yet scored", registry=reg
        )
        self.rejected = Counter(
            "crossrank_rejected_requests_total",
            "Requests refused with 429: they would wait too long, or the queue was full",
            registry=reg,
        )
        self.dropped = Counter(
            "crossrank_dropped_pairs_total",
            "Queued pairs dropped unscored: their client went away, or the server shut down",
            registry=reg,
        )
        self.drain_rate = Gauge(
            "crossrank_drain_rate_pairs_per_second",
            "Measured scoring rate (moving average of recent batches) used for admission",
            registry=reg,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
