"""Server reflection for `grpcurl` and other generic clients: both ``grpc.reflection.v1`` and ``v1alpha``,
over a descriptor pool that holds the contract as ``roomtone/v1/roomtone.proto`` with its source info, so
``grpcurl describe`` shows the proto's comments (the units and meanings of every field)."""

from __future__ import annotations

from importlib import resources

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

#: What reflection v1 is called on the wire; its messages are v1alpha's, field for field.
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
#: The descriptor set `scripts/gen_proto.sh` writes next to the stubs (with --include_source_info).
DESCRIPTOR_SET = "roomtone.descriptor.pb"


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: the v1alpha file under the v1 package (the two are identical
    apart from the package name), so reflection can describe its own v1 service."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = proto.package, "grpc.reflection.v1"
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", new
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:  # only message/enum fields name a type
                field.type_name = field.type_name.replace(f".{old}.", f".{new}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", f".{new}.")
            method.output_type = method.output_type.replace(f".{old}.", f".{new}.")
    return proto


def reflection_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """roomtone's contract (source info included), grpc.health.v1 and both reflection versions."""
    contract = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("service.rpc").joinpath(DESCRIPTOR_SET).read_bytes())
    files = list(contract.file)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return files + [_v1_reflection_file()]


class SourceInfoReflectionServicer(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, answering with the files as given (grpcio-reflection rebuilds them
    from the pool, which drops their source info and with it every comment)."""

    def __init__(self, service_names, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        pool = descriptor_pool.DescriptorPool()
        for file in files:
            pool.Add(file)
        super().__init__(service_names, pool=pool)
        self._files = {file.name: file for file in files}

    def _response(self, request, filename: str):
        """The file and every file it imports, each once."""
        names, pending = [], [filename]
        while pending:
            name = pending.pop()
            if name not in names:
                names.append(name)
                pending.extend(self._files[name].dependency)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._files[name].SerializeToString() for name in names]),
            original_request=request)

    def _file_by_filename(self, request, filename):
        if filename not in self._files:
            return super()._file_by_filename(request, filename)
        return self._response(request, filename)

    def _file_containing_symbol(self, request, fully_qualified_name):
        try:
            name = self._pool.FindFileContainingSymbol(fully_qualified_name).name
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._response(request, name)


def enable_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names``, health and both reflection services."""
    names = (*service_names, health.SERVICE_NAME, V1_SERVICE_NAME, reflection.SERVICE_NAME)
    servicer = SourceInfoReflectionServicer(names, reflection_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    }),))
