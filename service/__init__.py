"""roomtone's streaming daemon, its gRPC/Prometheus faces and the `roomtone` command line."""
