"""Building and running the gRPC server (built apart from running, for tests)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from blindmatch.matcher.core.executor import Executor
from blindmatch.matcher.domain import (
    AUTH_FAILURES_PER_MINUTE,
    CLK_MODE,
    DEFAULT_STREAMS_PER_MEMBER,
    MAX_INDEX_CHANGE_BYTES,
    MEMBER_STREAMS,
    MIN_UNARY_THREADS,
    MODES,
    QUERY_STREAM_IDLE_SECONDS,
    QUERY_STREAMS_IN_ALL,
    QUERY_STREAMS_PER_MEMBER,
    RPC_THREADS,
    STREAM_IDLE_SECONDS,
    STREAMS_IN_ALL,
    TWO_SERVER,
    counted,
)
from blindmatch.matcher.errors import NotFound, Unavailable
from blindmatch.matcher.placement import (
    allowed_cpus,
    pin_this_thread,
    pinned,
    plan_placement,
    request_cpu_from_env,
    start_lookups,
)
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.realtime.twoforget import RETRY_WAITS
from blindmatch.matcher.rpc.auth import Authenticator, call_kinds
from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.rpc.refusals import Refusals
from blindmatch.matcher.rpc.servicer import MatcherService
from blindmatch.matcher.rpc.streams import MemberLimiter, QueryStreams, StreamGuard
from blindmatch.matcher.storage.shard_source import (
    behind_at_last_stop,
    lookup_epoch,
    lookup_key,
    record_without_servers,
)
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.erasure import complete_cut_short
from blindmatch.matcher.usecases.erasure_retry import ErasureRetries
from blindmatch.matcher.usecases.retention import SWEEP_INTERVAL, Sweeper
from blindmatch.matcher.usecases.runs import RunManager
from blindmatch.matcher.usecases.scrub import SCRUB_INTERVAL, Scrubber
from blindmatch.matcher.usecases.tworuns import Forgot, TwoServerSetup, forget, warm_circuits
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from blindmatch.protos.wire import UNASKED_METADATA

log = logging.getLogger("blindmatch.matcher")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Streams may hold at most STREAMS_IN_ALL of the RPC_THREADS request threads (query
# streams at most QUERY_STREAMS_IN_ALL of those; rpc/streams.py); unary calls have the rest.
# HTTP/2 streams one connection may have open at once (a client opens more connections).
STREAMS_PER_CONNECTION = 128
# A connection that has not finished its (TLS) handshake by then is closed.
HANDSHAKE_TIMEOUT_MS = 20_000
# A connection without a call for this long is closed (a client reconnects on its next call).
CONNECTION_IDLE_MS = 300_000
# An open watch's end when the matcher stops (`RunningServer.stop`).
STOPPING = (
    "the matcher is stopping; the watch is ended (the matcher holds a watch only while it "
    "runs): open it again once the matcher is back"
)
# An open run watch's (WatchRun) and query stream's.
RUN_WATCH_STOPPING = (
    "the matcher is stopping; the run watch is ended (a run not finished by then is run "
    "again from the start once the matcher is back): watch the run again then"
)
QUERY_STREAM_STOPPING = (
    "the matcher is stopping; the query stream is ended (a question it had not answered was "
    "neither asked nor counted): ask again once the matcher is back"
)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Matcher"].full_name
MATCHER_RPCS = [m.name for m in pb.DESCRIPTOR.services_by_name["Matcher"].methods]


@dataclass
class RunningServer:
    """A started matcher: its gRPC server, bound port, store, run manager, sweeper and scrub."""

    server: grpc.Server
    port: int
    store: Store
    runs: RunManager
    realtime: Realtime
    sweeper: Sweeper
    query_streams: QueryStreams
    scrubber: Scrubber
    streams: StreamGuard
    erasures: ErasureRetries | None = None  # erasures that failed part-way, retried

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving: new calls refused at once, calls in flight given `grace` seconds,
        except the streams that wait for nothing the grace would bring and would hold the
        stop for all of it (`end_streams`)."""
        stopped = self.server.stop(grace)
        self.end_streams()
        stopped.wait()
        if self.erasures is not None:  # (one left pending is completed at the next start)
            self.erasures.close()
        self.streams.close()
        self.query_streams.close()
        self.scrubber.stop()
        self.sweeper.stop()
        self.runs.stop()
        self.realtime.close()
        commits, entries = self.store.audit.group_commits
        log.info(
            "audit log: %d disclosure entries written in %d group commits (one fsync each)",
            entries,
            commits,
        )
        lookups = self.realtime.lookups
        log.info(
            "real-time look-ups: %d queries in %d passes (the queries that arrive together "
            "share one)",
            lookups.asks,
            lookups.batches,
        )
        self.store.close()

    def end_streams(self) -> int:
        """End, at once, every open watch (UNAVAILABLE `STOPPING`), run watch (WatchRun,
        `RUN_WATCH_STOPPING`) and query stream (`QUERY_STREAM_STOPPING`, once its question,
        if any, is answered), and any opened from now on (accepted just as the stop began):
        each client says so (docs/operations.md "Stopping the matcher"). How many."""
        watches = self.realtime.watches.end_all(Unavailable(STOPPING))
        runs = self.runs.end_followers(Unavailable(RUN_WATCH_STOPPING))
        unasked = Unavailable(QUERY_STREAM_STOPPING)
        unasked.trailing = ((UNASKED_METADATA, "1"),)  # its next question, if sent, unread
        queries = self.query_streams.end_all(unasked)
        if watches or runs or queries:
            log.info(
                "the matcher is stopping: %s, %s and %s ended",
                counted(watches, "watch", "watches"),
                counted(runs, "run watch", "run watches"),
                counted(queries, "query stream"),
            )
        return watches + runs + queries


def create_server(
    address: str,
    data_dir: str | Path,
    admin_token: str,
    *,
    credentials: grpc.ServerCredentials | None = None,
    workers: int | None = None,
    lookup_threads: int | None = None,
    request_cpu: int | None = None,
    streams_per_member: int = DEFAULT_STREAMS_PER_MEMBER,
    min_free_bytes: int = 0,
    clock: Callable[[], float] = time.time,
    sweep_interval: float = SWEEP_INTERVAL,
    audit_key_file: str | Path | None = None,
    query_stream_idle: float = QUERY_STREAM_IDLE_SECONDS,
    scrub_interval: float = SCRUB_INTERVAL,
    executor: Executor | None = None,
    member_streams: int = MEMBER_STREAMS,
    max_streams: int = STREAMS_IN_ALL,
    stream_idle: float = STREAM_IDLE_SECONDS,
    max_index_change_bytes: int = MAX_INDEX_CHANGE_BYTES,
    max_auth_failures: int = AUTH_FAILURES_PER_MINUTE,
    lookup_servers: Sequence[str] = (),
    lookup_credentials: grpc.ChannelCredentials | None = None,
    two_server: TwoServerSetup | None = None,
    default_mode: str = "",
    retry_waits: Sequence[float] = RETRY_WAITS,
) -> RunningServer:
    """Open the store, delete expired data, bind `address` (port 0 picks a free one), serve.

    A data dir that cannot be served as it is (a damaged database, a missing audit key)
    raises `StartupRefused`, whose message says how to recover, before anything is served.

    `lookup_threads` is how many native threads run real-time look-ups, on the cores
    the request threads (kept on one) leave free; None: one per such core, 0: none, and
    no thread is placed (matcher/placement.py); `request_cpu` is the core the request
    threads keep (None: `BLINDMATCH_REQUEST_CPU`, else the lowest). `streams_per_member`
    caps each member's uploads, result fetches and run watches in flight;
    `min_free_bytes` is the disk space uploads must leave free; a query stream that asks nothing for
    `query_stream_idle` seconds is ended. Every stream counts against `member_streams`
    (its member's, of any RPC) and `max_streams` (everyone's: at most RPC_THREADS -
    MIN_UNARY_THREADS, so that unary calls always find a thread); one whose client sends or
    takes nothing for `stream_idle` seconds is ended (rpc/streams.py). One index change
    may carry at most `max_index_change_bytes` of references and CLKs. Past
    `max_auth_failures` calls refused for their token in a minute from one address, that
    address's calls are refused unread unless their token authenticated recently.
    `clock` is the time source for expiry and the audit log (tests pass their
    own); `sweep_interval` is how often expired projects are looked for;
    `scrub_interval` how often every stored upload is hashed again (0: only its size is
    checked, at start-up). `executor` runs batch runs' comparison tasks (default:
    `workers` threads here; core.cluster.DaskExecutor: a Dask cluster). With
    `lookup_servers` (addresses, the i-th holding shard i of them all; reached with
    `lookup_credentials`, None: plaintext), real-time queries fan out to them and
    index changes are forwarded to them (rpc/lookup_client.py). With `two_server`
    (rpc/twoserver_project.py `combiner_setup`) the matcher is the combiner of two-server
    projects; `default_mode` is a project's mode where CreateProject gives none ("": two-server
    with `two_server`, so that a matcher that has S1 and S2 holds no CLK unless a project asks
    for one; clk without).
    `retry_waits`: the seconds before each background try again (then the last, over and
    over) of an erasure that failed part-way (usecases/erasure_retry.py) and of S1's or S2's
    start-up Forget of what a killed matcher left (realtime/twoforget.py); tests pass
    shorter ones.
    """
    default_mode = default_mode or (TWO_SERVER if two_server is not None else CLK_MODE)
    if default_mode not in MODES or (default_mode == TWO_SERVER and two_server is None):
        raise ValueError(f"default mode {default_mode!r}: one of {MODES} (two-server: with S1/S2)")
    if not 1 <= member_streams <= max_streams <= RPC_THREADS - MIN_UNARY_THREADS:
        raise ValueError(
            f"streams: need 1 <= per member ({member_streams}) <= in all ({max_streams}) <= "
            f"{RPC_THREADS - MIN_UNARY_THREADS} (the request threads less those kept for "
            "unary calls)"
        )
    if not retry_waits or min(retry_waits) <= 0:
        raise ValueError(f"retry waits {tuple(retry_waits)}: one or more, each positive")
    if stream_idle <= 0 or max_index_change_bytes < 1:
        raise ValueError("the stream idle limit and the index change limit must be positive")
    streams = StreamGuard(member_streams, max_streams, stream_idle)
    everywhere = frozenset(allowed_cpus())
    if request_cpu is None:
        request_cpu = request_cpu_from_env()
    placement = plan_placement(set(everywhere), lookup_threads, request_cpu)
    if placement is not None and start_lookups(placement) == 0:
        placement = None  # no native kernel: look-ups stay on the request threads
    request_cpus = placement.request_cpus if placement is not None else None
    # Every thread started in here (the query log's, gRPC's event engine, poller and
    # request workers) inherits the request CPUs, except the batch runs' below; index
    # merges, started later by request threads, move themselves to every core.
    with pinned(request_cpus):
        store = Store(
            data_dir, min_free_bytes=min_free_bytes, clock=clock, audit_key_file=audit_key_file
        )
        try:
            # Which look-up servers the last process left behind (read before an index is
            # stored; with or without look-up servers now, its record goes).
            last_stop = behind_at_last_stop(data_dir)
            if not lookup_servers:  # (a next start with servers is told they missed all)
                record_without_servers(data_dir)
            remote = (
                LookupServers(
                    lookup_servers,
                    lookup_key(data_dir),
                    lookup_credentials,
                    epoch=lookup_epoch(data_dir),
                    data_dir=data_dir,
                    last_stop=last_stop,
                )
                if lookup_servers
                else None
            )
            # Index merges run in the background at nice 10, on every core, as batch runs do.
            realtime = Realtime(
                store,
                data_dir,
                clock=clock,
                merge_cpus=everywhere if request_cpus is not None else None,
                remote=remote,
                two_server=two_server,
                retry_waits=retry_waits,
            )
            if remote is not None:
                log.info("%s", remote.describe())
        except BaseException:  # index.sqlite refused (damaged): nothing stays open
            store.close()
            raise
        if two_server is not None:  # its first run's and query's circuits, built ahead
            warm_circuits(store)
        sweeper = Sweeper(store, sweep_interval)
        sweeper.on_expired.append(realtime.erase_project)

        def end_streams(name: str) -> None:
            streams.end_project(name, NotFound(store.why_gone(name)))  # expired, or ended

        sweeper.on_expired.append(end_streams)
        if two_server is not None:  # S1 and S2 drop an expired two-server project's shares

            def forget_shares(name: str) -> list[Forgot]:  # (EndProject's reply names them)
                if store.mode_of(name) != TWO_SERVER:
                    return []  # a CLK project's data never reached S1 or S2
                forgot = forget(store, two_server, name, quiet=True)
                for f in forgot:
                    if f.error:
                        log.warning("project %s expired, but %s", name, f.error)
                return forgot

            sweeper.on_expired.append(forget_shares)
        # Erasures a stopped matcher left part-way, and indexes of projects expired while
        # it was down, completed before the first request is served.
        erasures = ErasureRetries(store, realtime, two_server, tuple(retry_waits))
        complete_cut_short(store, realtime, two_server, erasures)
        # S1's and S2's forgetting of a killed matcher's query records, asked when `realtime`
        # was made, ran meanwhile: its bounded wait ends with the erasures', not after them.
        if realtime.left is not None:
            realtime.left.first_passes()
        sweeper.start()  # expired data goes before the first request is served
        if reserve := _reserve_warning(store.files.root, min_free_bytes):
            log.warning("%s", reserve)
        scrubber = Scrubber(store, scrub_interval)
        scrubber.start()  # sizes now; hashes in the background
        runs = RunManager(store, workers=workers, executor=executor, two_server=two_server)
        if two_server is not None:
            log.info("two-server projects: S1 %s, S2 %s", two_server.s1, two_server.s2)
        log.info("%s", runs.executor.describe())
        with pinned(everywhere if request_cpus is not None else None):
            runs.start()  # a batch run's threads keep every core
        query_streams = QueryStreams(
            per_member=min(QUERY_STREAMS_PER_MEMBER, member_streams),
            in_all=min(QUERY_STREAMS_IN_ALL, max_streams),
            idle_seconds=query_stream_idle,
        )
        query_streams.start()
        streams.start()
        refusals = Refusals(
            realtime.index_store.log_queries,
            known=store.is_live,
            max_auth_failures=max_auth_failures,
        )
        service = MatcherService(
            store,
            runs,
            realtime=realtime,
            sweeper=sweeper,
            limiter=MemberLimiter(streams_per_member),
            query_streams=query_streams,
            streams=streams,
            max_index_change_bytes=max_index_change_bytes,
            refusals=refusals,
            default_mode=default_mode,
            erasures=erasures,
        )
        authenticator = Authenticator(
            admin_token,
            store.digest_owner,
            SERVICE_NAME,
            call_kinds(service, MATCHER_RPCS),
            streams=streams,
            refusals=refusals,
            retired=store.retired_token,
        )
        server, health_servicer = _grpc_server(service, authenticator, request_cpus)
        port = add_port(server, address, credentials)
        if port:
            server.start()
    if port == 0:
        erasures.close()
        streams.close()
        scrubber.stop()
        query_streams.close()
        runs.stop()
        realtime.close()
        sweeper.stop()
        store.close()
        raise cannot_listen(address)
    if placement is not None:
        log.info("%s", placement.describe())
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("matcher listening on port %d, data in %s", port, store.files.root)
    return RunningServer(
        server, port, store, runs, realtime, sweeper, query_streams, scrubber, streams, erasures
    )


def _reserve_warning(root: Path, min_free_bytes: int) -> str:
    """What to tell the operator at start when the free disk is already under the reserve
    (every upload would be refused); "" when it is not."""
    free = shutil.disk_usage(root).free
    if free >= min_free_bytes:
        return ""
    mib = 1024 * 1024
    return (
        f"{free / mib:.1f} MiB free on {root}'s disk, under the {min_free_bytes / mib:.1f} MiB "
        "--min-free-mb keeps in reserve: every upload will be refused until space is freed "
        "there or --min-free-mb lowered"
    )


def _grpc_server(
    service: MatcherService, authenticator: Authenticator, request_cpus: frozenset[int] | None
) -> tuple[grpc.Server, health.HealthServicer]:
    """The gRPC server with the matcher, health and reflection services (not started);
    every matcher call is authenticated by `authenticator` first."""

    def place() -> None:
        if request_cpus is not None:
            pin_this_thread(request_cpus)

    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=RPC_THREADS,
            thread_name_prefix="blindmatch-rpc",
            initializer=place,
        ),
        # Past this many calls in flight gRPC itself answers RESOURCE_EXHAUSTED
        # instead of queueing without bound.
        maximum_concurrent_rpcs=RPC_THREADS * 4,
        interceptors=[authenticator],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
            ("grpc.max_connection_idle_ms", CONNECTION_IDLE_MS),
            EXCLUSIVE_PORT,
        ],
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
    return server, health_servicer


class Stoppable(Protocol):
    """A started server (the matcher's, or a look-up server's)."""

    def stop(self, grace: float | None = 1.0) -> None: ...


def serve_forever(running: Stoppable, ready: Callable[[], None] | None = None) -> None:
    """Block until SIGINT/SIGTERM, then stop gracefully.

    `ready` is called once the signal handlers are in place (announce the
    server there: a SIGTERM sent on that cue then always stops it gracefully).

    The main thread waits on the signal wakeup fd, not on an event the Python handler
    sets: the kernel may hand a process's SIGTERM to any of its threads (gRPC's, say, when
    the main thread is slow to wake under load), and CPython runs the handler only once
    the main thread runs Python code again, which a main thread asleep in a lock's
    acquire never did: the server did not stop (1 run in a few hundred under load; a
    SIGTERM sent to another thread did it every time). The C handler writes the signal's number
    to the wakeup fd from whichever thread it runs on.
    SIGUSR1 writes every thread's stack to stderr (`faulthandler`, from C: even with the
    main thread stuck), for a server that does not stop: benchmarks/cliflow.py sends it
    to one that outlives its SIGTERM.
    """
    import contextlib
    import faulthandler
    import signal
    import socket

    with contextlib.suppress(RuntimeError, ValueError, OSError):  # (no stderr: no stacks)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    stops = {int(signal.SIGINT), int(signal.SIGTERM)}
    woken, waker = socket.socketpair()
    waker.setblocking(False)
    previous = signal.set_wakeup_fd(waker.fileno(), warn_on_full_buffer=False)
    try:
        for signum in stops:  # (a Python handler, so that the C one writes the wakeup fd)
            signal.signal(signum, lambda _signum, _frame: None)
        if ready is not None:
            ready()
        while (signum := woken.recv(1)[0]) not in stops:
            pass  # (another signal with a Python handler)
    finally:
        signal.set_wakeup_fd(previous)
        woken.close()
        waker.close()
    log.info("signal %d: stopping", signum)
    running.stop(grace=5)
    log.info("stopped")
