"""Container healthcheck for Docker/compose: exit 0 when the service is healthy, 1 otherwise.

    python /opt/fnas/healthcheck.py --grpc 127.0.0.1:50051 --service fnas.v1.AgentService
    python /opt/fnas/healthcheck.py --http http://127.0.0.1:9464/ready

--grpc asks the standard grpc.health.v1 service, which every FNAS server runs and
keeps NOT_SERVING until warm-up is done and again during graceful shutdown
(fnas/serving.py); Kubernetes uses its native gRPC probe for the same check.
--http is for the trainer, which has no gRPC server: its metrics endpoint
answers /metrics once the process is up and /ready 200 while it pulls jobs
on a live NATS connection.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_serving(target: str, service: str, timeout_s: float) -> bool:
    """True when `target` reports SERVING for `service` ("" is the whole server)."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as e:
            print(f"unhealthy: {target} {service or '(server)'}: {e.code().name}", file=sys.stderr)
            return False
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"unhealthy: {target} {service or '(server)'}: {status}", file=sys.stderr)
        return False
    return True


def http_ok(url: str, timeout_s: float) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except OSError as e:  # URLError, connection refused, timeout
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 healthy, 1 unhealthy, 2 bad flags)."""
    p = argparse.ArgumentParser(prog="healthcheck", description=__doc__.split("\n", 1)[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--grpc", metavar="HOST:PORT", help="gRPC server to ask (grpc.health.v1)")
    what.add_argument("--http", metavar="URL", help="HTTP URL that must answer 200")
    p.add_argument("--service", default="", help="gRPC service name, e.g. fnas.v1.AgentService")
    p.add_argument("--timeout-s", type=float, default=3.0, help="deadline of the check")
    args = p.parse_args(argv)
    if args.grpc:
        return 0 if grpc_serving(args.grpc, args.service, args.timeout_s) else 1
    return 0 if http_ok(args.http, args.timeout_s) else 1


if __name__ == "__main__":
    sys.exit(main())
