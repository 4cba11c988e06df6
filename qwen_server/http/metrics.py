"""Prometheus metrics for the server, on a registry of its own per app.

A private registry (not the process-global default) keeps several apps in one process (tests)
apart and exports only what this server measures. Queue depth, readiness and GPU memory are
read at scrape time by a collector, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..contract.vocabulary import DEFAULT_VOCABULARY
from ..engine.protocol import EngineClient

# The *_created series double the exposition for no use on dashboards.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)


_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class _LiveState(Collector):
    """Scrape-time gauges: queue depth, readiness, batch cap, GPU memory."""

    def __init__(self, engine: Callable[[], EngineClient | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self._engine()
        live = engine if engine is not None and engine.ready and not engine.failed else None
        ready = live is not None
        yield GaugeMetricFamily("qwen_model_ready", "1 when the model is serving", value=ready)
        yield GaugeMetricFamily(
            "qwen_queue_depth",
            "Shots waiting for the model",
            value=live.queue_depth if live is not None else 0,
        )
        stats = live.stats() if live is not None else {}
        yield GaugeMetricFamily(
            "qwen_batch_cap",
            "Most shots one generate() may take now (lowered after out-of-memory batches)",
            value=stats.get("batch_cap", 0),
        )
        yield GaugeMetricFamily(
            "qwen_batch_cap_max",
            "Ceiling of the batch cap: batching.max_batch_size, or what 'auto' measured",
            value=stats.get("batch_cap_max", 0),
        )
        used = GaugeMetricFamily(
            "qwen_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu", "name"]
        )
        total = GaugeMetricFamily(
            "qwen_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu", "name"]
        )
        for gpu in live.gpu_info() if live is not None else []:
            labels = [str(gpu.get("index")), str(gpu.get("name"))]
            if gpu.get("memory_used_mb") is not None:
                used.add_metric(labels, float(gpu["memory_used_mb"]) * 1_048_576)
            if gpu.get("memory_total_mb") is not None:
                total.add_metric(labels, float(gpu["memory_total_mb"]) * 1_048_576)
        yield used
        yield total


class Metrics:
    """The server's metrics: requests, latency, batches, shots, queue, GPU memory."""

    def __init__(
        self,
        engine: Callable[[], EngineClient | None],
        vocabulary: Iterable[str] = DEFAULT_VOCABULARY.names,
    ) -> None:
        vocabulary = tuple(vocabulary)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "qwen_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qwen_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "qwen_batch_size",
            "Shots per generate() call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "qwen_batch_generate_seconds",
            "Time of one generate() call",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shots = Counter(
            "qwen_shots_analyzed", "Shots analysed by the model", registry=self.registry
        )
        self.fallback_fields = Counter(
            "qwen_fallback_fields",
            "Result fields the model's answer lacked, filled with a fallback (caption or a score)",
            ["field"],
            registry=self.registry,
        )
        # The label is "caption", a name of the server's vocabulary, or "other" for attributes a
        # request defined itself: the series are fixed by the configuration (at most 66), never
        # by what callers send. Every series exists from the start, at 0.
        self._known_fields = frozenset(("caption", *vocabulary))
        for name in ("caption", *vocabulary, "other"):
            self.fallback_fields.labels(name)
        self.store_failures = Counter(
            "qwen_store_failures",
            "Session store writes that failed (the results were still returned, stored: false)",
            ["operation"],
            registry=self.registry,
        )
        self.registry.register(_LiveState(engine))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request (route is the template, e.g. /sessions/{id}).

        Label values stay a small fixed set whatever a caller sends: an unmatched path is
        "(unmatched)" already, and a method outside HTTP's standard ones is "OTHER" (the h11
        parser passes any token), so no caller can grow the number of series.
        """
        method = method if method in _STANDARD_METHODS else "OTHER"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one generate() call of ``size`` shots."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.shots.inc(size)

    def observe_fallbacks(self, fields_per_result: Iterable[Iterable[str]]) -> None:
        """Count, per field name, the fields that fell back in a request's results."""
        for fields in fields_per_result:
            for name in fields:
                self.fallback_fields.labels(name if name in self._known_fields else "other").inc()

    def observe_store_failure(self, operation: str) -> None:
        """Count one failed store write (``operation``: save or delete)."""
        self.store_failures.labels(operation).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
