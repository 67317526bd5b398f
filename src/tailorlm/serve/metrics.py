"""Prometheus metrics of one server (GET /metrics), in a registry of its own per app.

    tailor_requests_total{adapter, route, status}        requests answered, by outcome
    tailor_request_seconds{adapter, route}                time to the whole answer
    tailor_time_to_first_token_seconds{adapter}          streaming: time to the first text
    tailor_batch_rows{kind}                               rows per engine call (classify/generate)
    tailor_queue_depth                                    requests waiting for the worker
    tailor_resident_adapters, tailor_resident_bytes       the adapter cache (base not counted)
    tailor_tokens_total{adapter, kind}                    prompt and completion tokens

`adapter` is the version served ("support-router:3"), the base's name, or "-" for a request
that named no servable model (so a client cannot mint label values by naming junk models).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("tailor_requests", "Requests answered", ["adapter", "route",
                                "status"], registry=r)
        self.latency = Histogram("tailor_request_seconds", "Seconds to the whole answer",
                                 ["adapter", "route"], buckets=LATENCY, registry=r)
        self.ttft = Histogram("tailor_time_to_first_token_seconds", "Streaming: seconds to "
                              "the first text", ["adapter"], buckets=LATENCY, registry=r)
        self.batch = Histogram("tailor_batch_rows", "Rows per engine call", ["kind"],
                               buckets=BATCH, registry=r)
        self.queue = Gauge("tailor_queue_depth", "Requests waiting for the worker", registry=r)
        self.resident = Gauge("tailor_resident_adapters", "Adapters resident in memory",
                              registry=r)
        self.resident_bytes = Gauge("tailor_resident_bytes", "Bytes resident adapters add",
                                    registry=r)
        self.tokens = Counter("tailor_tokens", "Tokens processed", ["adapter", "kind"],
                              registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
