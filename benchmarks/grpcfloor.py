"""gRPC's own cost a call, at the server: the floor under every real-time query.

Serves a handler that does nothing (the health service's `Check`) from gRPC's thread-pool
server (`grpc.server` with a ThreadPoolExecutor, as the matcher serves) and from its
asyncio server (`grpc.aio.server`, an `async def` handler on an event loop in a thread of
its own), each in this process, and has 1 and then 20 concurrent callers (an asyncio
client in a process of its own, one channel each, closed loop) call it. Prints the
server process's CPU a call (user + system, /proc) and the wall time a call, for each
server, and the asyncio server's CPU against the thread-pool server's as a ratio.

    .venv/bin/python benchmarks/grpcfloor.py                  # 2 rounds, 2,000 calls each
    .venv/bin/python benchmarks/grpcfloor.py --rounds 4 --calls 4000

The machine's cores are shared: run it a few times, servers interleaved (the default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def callers(port: int, n: int, calls: int) -> float:
    """`n` concurrent callers, `calls` calls in all; the wall time of the calls."""

    async def one(stub: health_pb2_grpc.HealthStub, k: int) -> None:
        for _ in range(k):
            await stub.Check(health_pb2.HealthCheckRequest())

    async def run() -> float:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(n)]
        stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
        for stub in stubs:  # connected before the clock starts
            await stub.Check(health_pb2.HealthCheckRequest())
        t0 = time.perf_counter()
        await asyncio.gather(*(one(s, calls // n) for s in stubs))
        wall = time.perf_counter() - t0
        for c in channels:
            await c.close()
        return wall

    return asyncio.run(run())


class Served:
    """A started server of one kind, on a free loopback port."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "threads":
            # Its port its own, as the matcher's (matcher/rpc/listen.py `EXCLUSIVE_PORT`).
            self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                                      options=[EXCLUSIVE_PORT])  # fmt: skip
            health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)
            self.port = add_port(self.server, "127.0.0.1:0", None)
            if not self.port:
                raise cannot_listen("127.0.0.1:0")
            self.server.start()
            return
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server(migration_thread_pool=futures.ThreadPoolExecutor(8),
                                     options=[EXCLUSIVE_PORT])  # fmt: skip
            health_pb2_grpc.add_HealthServicer_to_server(health_async.HealthServicer(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            if not port:
                raise cannot_listen("127.0.0.1:0")
            await server.start()
            return server, port

        self.aio, self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result()

    def stop(self) -> None:
        if self.kind == "threads":
            self.server.stop(None).wait()
        else:
            asyncio.run_coroutine_threadsafe(self.aio.stop(None), self.loop).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()  # (its selector's sockets too: left open, a ResourceWarning)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls a round (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each server")
    parser.add_argument("--caller", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.caller:  # the client process
        print(callers(*args.caller))
        return 0
    cpu: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for kind in ("threads", "asyncio"):
            served = Served(kind)
            try:
                for n in (1, 20):
                    before = cpu_seconds(os.getpid())
                    out = subprocess.run(
                        [sys.executable, __file__, "--caller", str(served.port), str(n),
                         str(args.calls)],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    used = (cpu_seconds(os.getpid()) - before) * 1000 / args.calls
                    wall = float(out.stdout) * 1000 / args.calls
                    cpu.setdefault((kind, n), []).append(used)
                    load = os.getloadavg()[0]
                    print(f"{kind:>7} server, {n:>2} callers: server CPU {used:.3f} ms a call, "
                          f"wall {wall:.3f} ms a call; load {load:.1f}", flush=True)  # fmt: skip
            finally:
                served.stop()
    for n in (1, 20):
        sync, aio = (statistics.median(cpu[(k, n)]) for k in ("threads", "asyncio"))
        # CPU is counted in clock ticks (10 ms): a few calls can use none that shows
        ratio = f"{aio / sync:.2f}x the thread pool's" if sync else "the thread pool's: 0 ticks"
        print(f"{n:>2} callers: server CPU a call, medians: thread pool {sync:.3f} ms, asyncio "
              f"{aio:.3f} ms ({ratio})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
