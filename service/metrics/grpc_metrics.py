"""Prometheus metrics of the gRPC API (the daemon's other metrics live in service/metrics/daemon_metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter

GRPC_REQUESTS = Counter(
    "roomtone_grpc_requests_total",
    "gRPC requests handled, by method name and final status code (e.g. OK, NOT_FOUND).",
    ["method", "code"],
)
STREAM_ITEMS_DROPPED = Counter(
    "roomtone_stream_items_dropped_total",
    "Live items not delivered to a StreamEvents client that read too slowly (each client's drop counts).",
)
