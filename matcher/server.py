"""Building and running the gRPC server (built apart from running, for tests)."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from matcher.limits import DEFAULT_STREAMS_PER_MEMBER, MemberLimiter
from matcher.realtime import Realtime
from matcher.runs import RunManager
from matcher.service import MatcherService
from matcher.store import Store
from protos import blindmatch_pb2 as pb
from protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RPC_THREADS = 64
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Matcher"].full_name


@dataclass
class RunningServer:
    """A started matcher: its gRPC server, bound port, store and run manager."""

    server: grpc.Server
    port: int
    store: Store
    runs: RunManager
    realtime: Realtime

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()
        self.runs.stop()
        self.realtime.close()
        self.store.close()


def create_server(
    address: str,
    data_dir: str | Path,
    admin_token: str,
    *,
    credentials: grpc.ServerCredentials | None = None,
    workers: int | None = None,
    streams_per_member: int = DEFAULT_STREAMS_PER_MEMBER,
    min_free_bytes: int = 0,
) -> RunningServer:
    """Open the store, bind `address` (port 0 picks a free one), start serving.

    `streams_per_member` caps each member's uploads, result fetches and run
    watches in flight; `min_free_bytes` is the disk space uploads must leave free.
    """
    store = Store(data_dir, min_free_bytes=min_free_bytes)
    runs = RunManager(store, workers=workers)
    realtime = Realtime(store, data_dir)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="blindmatch-rpc"),
        # Past this many calls in flight gRPC itself answers RESOURCE_EXHAUSTED
        # instead of queueing without bound.
        maximum_concurrent_rpcs=RPC_THREADS * 4,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    service = MatcherService(
        store,
        runs,
        admin_token,
        realtime=realtime,
        limiter=MemberLimiter(streams_per_member),
    )
    pb_grpc.add_MatcherServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        realtime.close()
        store.close()
        raise OSError(f"could not listen on {address}")
    runs.start()
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("matcher listening on port %d, data in %s", port, store.dir)
    return RunningServer(server, port, store, runs, realtime)


def serve_forever(running: RunningServer) -> None:
    """Block until SIGINT/SIGTERM, then stop gracefully."""
    import signal

    stopped = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stopped.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stopped.wait()
    running.stop(grace=5)
