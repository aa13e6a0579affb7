"""Container health check: gRPC health checking over mutual TLS with the admin certificate.

Exit 0 when the broker answers SERVING, 1 otherwise. Configuration comes from `broker.config`
(the same file and ISB_* variables as the broker), so it checks the broker it runs beside.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.config import load_config


def main() -> int:
    """Ask the local broker for its health; return the exit status."""
    config = load_config()
    cert_dir = config.cert_dir
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config.path("ca_bundle").read_bytes(),
        private_key=(cert_dir / "admin.key").read_bytes(),
        certificate_chain=(cert_dir / "admin.crt").read_bytes(),
    )
    port = config.listen.rpartition(":")[2]
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
