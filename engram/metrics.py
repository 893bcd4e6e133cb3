"""Prometheus metrics (docs/operations.md, "Metrics"), through the `prometheus-client` library.

Every engram process of a machine writes its counters and histograms into one directory
(prometheus-client's multiprocess mode): `engram serve` makes a private one for itself and the
workers it supervises, or all processes share `ENGRAM_METRICS_DIR` (an API process and
`engram worker`s beside it). `GET /metrics` of an API process answers the sum over that
directory, plus what the store says at the scrape: the queue's depth and the age of its
oldest pending job (one query; the same from every API process).

The mode is chosen when prometheus-client is first imported, so engram/metrics_dir.py's
`use_directory` runs before anything imports this module (engram/cli.py does it first thing).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from engram.metrics_dir import ENV

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STAGES = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)

REQUEST_SECONDS = Histogram("engram_http_request_duration_seconds", "HTTP request latency, by route template, "
                            "method and status", ["route", "method", "status"], buckets=_LATENCY)
EVENTS_ACCEPTED = Counter("engram_events_accepted_total", "Events (messages) written by accepts, by API family",
                          ["family"])
RATE_LIMITED = Counter("engram_rate_limited_total", "Requests refused with 429 by a rate limit, by what ran out",
                       ["limit"])
JOBS_FINISHED = Counter("engram_jobs_finished_total", "Jobs that ended, by kind, outcome and error code",
                        ["kind", "outcome", "code"])
STAGE_SECONDS = Histogram("engram_job_stage_duration_seconds", "Time a job spent in each pipeline stage",
                          ["stage"], buckets=_STAGES)
EMBEDDED_TEXTS = Counter("engram_embedded_texts_total", "Texts embedded by the pipeline's embedder")
EMBED_SECONDS = Counter("engram_embed_seconds_total", "Seconds the pipeline spent embedding")
LLM_REQUESTS = Counter("engram_llm_requests_total", "Requests to the language model and embeddings servers",
                       ["kind"])
LLM_TOKENS = Counter("engram_llm_tokens_total", "Tokens the model servers counted", ["kind"])
LLM_ERRORS = Counter("engram_llm_errors_total", "Jobs that failed on a provider error, by code", ["code"])


def initialise(role: str) -> None:
    """Series a dashboard reads exist from the start, at 0 (a labelled counter otherwise
    appears only when first counted)."""
    if role == "api":
        for scope in ("key", "org"):
            for what in ("requests", "events"):
                RATE_LIMITED.labels(f"{scope}_{what}")
        for family in ("x", "m"):
            EVENTS_ACCEPTED.labels(family)
    else:
        for kind in ("ingest", "episode", "replay"):
            JOBS_FINISHED.labels(kind, "succeeded", "")
        for kind in ("llm", "embeddings"):
            LLM_REQUESTS.labels(kind)
        for kind in ("prompt", "completion", "embedding"):
            LLM_TOKENS.labels(kind)
        for code in ("ingest_failed", "rate_limit_exceeded"):
            LLM_ERRORS.labels(code)


def observe_job(kind: str, outcome: str, code: str, result: dict[str, Any] | None, embedded: int,
                usage: dict[str, int]) -> None:
    """What a worker records when a job ends."""
    JOBS_FINISHED.labels(kind, outcome, code).inc()
    timings = (result or {}).get("stage_timings") or {}
    for stage, seconds in timings.items():
        STAGE_SECONDS.labels(stage).observe(float(seconds))
    if embedded:
        EMBEDDED_TEXTS.inc(embedded)
        EMBED_SECONDS.inc(float(timings.get("embed", 0.0)))
    for kind_, name in (("llm", "llm_requests"), ("embeddings", "embedding_requests")):
        if usage.get(name):
            LLM_REQUESTS.labels(kind_).inc(usage[name])
    for kind_, name in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"),
                        ("embedding", "embedding_tokens")):
        if usage.get(name):
            LLM_TOKENS.labels(kind_).inc(usage[name])


class _Queue:
    """The queue as the store sees it at the scrape."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = self._store.queue_depth()
        jobs = GaugeMetricFamily("engram_queue_jobs", "Unfinished jobs in the queue, by status", labels=["status"])
        for status in ("pending", "running"):
            jobs.add_metric([status], depth.get(status, 0))
        yield jobs
        age = self._store.oldest_pending_age_s()
        yield GaugeMetricFamily("engram_queue_oldest_pending_age_seconds",
                                "Age of the oldest pending job (0 when none is pending)", value=age or 0.0)


def render(store: Any) -> tuple[bytes, str]:
    """The exposition: every process's metrics of this machine's directory (this process's
    own when there is none: tests that build the app in process), and the queue. A registry
    of its own per scrape: no global state changes, so scrapes may overlap."""
    registry = CollectorRegistry()
    registry.register(_Queue(store))
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
