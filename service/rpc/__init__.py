"""Generated protobuf/gRPC stubs for proto/roomtone/v1/roomtone.proto (`bash scripts/gen_proto.sh`)."""

from . import roomtone_pb2, roomtone_pb2_grpc

__all__ = ["roomtone_pb2", "roomtone_pb2_grpc"]
