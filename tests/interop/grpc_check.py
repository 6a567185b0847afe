#!/usr/bin/env python3
"""An independent gRPC client (Python grpcio) against a running collector.

usage: grpc_check.py HOST:PORT
Checks the standard health service, lists services through server reflection, then calls
gpufleet.v1.Query/ListNodes with message types learned from reflection alone (no generated
code). Prints {"services": [...], "nodes": [...]} as JSON.
"""
import json
import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(addr):
    ch = grpc.insecure_channel(addr)
    health = health_pb2_grpc.HealthStub(ch)
    for svc in ["", "gpufleet.v1.Telemetry", "gpufleet.v1.Query"]:
        r = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5)
        if r.status != health_pb2.HealthCheckResponse.SERVING:
            raise SystemExit(f"health of {svc!r}: {r}")
    db = ProtoReflectionDescriptorDatabase(ch)
    services = sorted(db.get_services())
    pool = DescriptorPool(db)
    method = pool.FindServiceByName("gpufleet.v1.Query").FindMethodByName("ListNodes")
    req_t = message_factory.GetMessageClass(method.input_type)
    resp_t = message_factory.GetMessageClass(method.output_type)
    call = ch.unary_unary(
        "/gpufleet.v1.Query/ListNodes",
        request_serializer=req_t.SerializeToString,
        response_deserializer=resp_t.FromString,
    )
    resp = call(req_t(), timeout=5)
    print(json.dumps({"services": services, "nodes": [n.name for n in resp.nodes]}))


if __name__ == "__main__":
    main(sys.argv[1])
