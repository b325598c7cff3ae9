"""API: the gRPC face of the daemon. Servicers (`grpc_server`) over a `ServiceBackend` Protocol
(`service_backend`, implemented by `daemon_backend`), the live fan-out for StreamEvents (`event_bus`),
TLS and tokens (`grpc_security`), reflection (`reflection`), record strings <-> proto enums
(`proto_names`), what ListMicrophones says (`mic_status`), and the client side the commands use
(`grpc_client`, `daemon_address`). The generated stubs stay in service/rpc/.

May import: metrics, store, analysis, capture, service's base modules, service.rpc and encoder/.
Never announce, web, cli or the daemon.
"""
