"""Metrics: the daemon's Prometheus metrics (`daemon_metrics`; names are a contract), the gRPC API's own
(`grpc_metrics`) and the bounded /metrics HTTP(S) listener (`http_server`).

May import: analysis (label kinds), service's base modules and encoder/.
Never store, announce, api, web, cli or the daemon.
"""
