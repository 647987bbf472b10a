"""The typed client for the matcher: callers get our dataclasses and exceptions, never
a protobuf message or a `grpc.RpcError`.

Transient failures (the matcher restarting, a dropped connection, a per-member
limit on calls in flight) are retried with exponential backoff and jitter; see
`client.remote.retry`. An upload is retried by restarting its stream with the same
client-chosen upload id, so the matcher stores it once however often it is sent.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import MatcherError
from blindmatch.client.remote import convert
from blindmatch.client.remote.channel import (
    TRANSIENT,
    check_reachable,
    open_channel,
    translate_errors,
)
from blindmatch.client.remote.model import (
    IndexSummary,
    ProjectInfo,
    QueryAnswer,
    ResultHit,
    Results,
    RunProgress,
    UploadReceipt,
    WatchEvent,
)
from blindmatch.client.remote.operator_calls import OperatorCalls
from blindmatch.client.remote.peers import WAIT_SAID_SECONDS, drop_peer_channels
from blindmatch.client.remote.request_calls import RequestCalls
from blindmatch.client.remote.retry import RetryPolicy
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from blindmatch.protos.wire import DIGEST_BYTES

if TYPE_CHECKING:
    from blindmatch.client.encoding.sharing import SharedUpload
    from blindmatch.client.remote.session import QuerySession

# Bytes of whole CLKs per upload message: well under gRPC's 16 MiB message limit.
UPLOAD_BYTES_PER_MESSAGE = 2 * 1024 * 1024

T = TypeVar("T")


class MatcherClient(RequestCalls, OperatorCalls):
    """One connection to a matcher, with one token (operator's or a member's)."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[str], None] | None = None,
        insecure: bool = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """`credentials` None: plaintext, which is refused here (`InputError`, before any
        connection) for a target off this machine unless `insecure`; a `grpcs://` target
        is TLS with the system's trusted CAs. `on_retry`: told of a retry (once while a
        call fails the same way, `_retrying`); `on_wait`: told once where a call waits for
        S1 or S2 to answer (client/remote/peers.py `say_waiting`)."""
        self.target = target
        self.token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_retry, self.on_wait = on_retry, on_wait
        self.credentials = credentials
        self.insecure = insecure
        self._channel = open_channel(target, credentials, insecure=insecure)
        self._stub = pb_grpc.MatcherStub(self._channel)
        # Channels to S1 and S2 by address, a two-server project's queries' (kept for the
        # client's life: client/remote/peers.py `peer_channel`).
        self._peers: dict[str, grpc.Channel] = {}
        self._peers_lock = threading.Lock()

    def close(self) -> None:
        drop_peer_channels(self)
        self._channel.close()

    def check_reachable(self) -> None:
        """Fail at once, with one clear sentence, when no matcher answers at the target
        (rather than retrying for a while as calls do; for a command run by hand)."""
        check_reachable(self._channel, self.target)

    def __enter__(self) -> MatcherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """Run `attempt` until it succeeds, fails for good, or the retry policy runs out.
        A retry is told (`on_retry`) where its failure differs from the last one told: a
        call failing the same way is said once, not at each attempt (a run with S1 down said
        the same line six times over its ~20 s before twoleft, 2026-12-07)."""
        delays = self.retry.delays()
        tries, told = 1, ""
        while True:
            try:
                with translate_errors(self.target):
                    return attempt()
            except TRANSIENT as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                tries += 1
                if self.on_retry and str(exc) != told:
                    told = str(exc)
                    self.on_retry(
                        f"{what}: {exc}; retrying in {delay:.1f}s "
                        f"(attempt {tries} of {self.retry.attempts}; said again only if the "
                        "failure changes)"
                    )
                time.sleep(delay)

    def _unary(self, rpc: str, request: Message) -> Any:
        """One unary call, not retried (for calls that change something once)."""
        with translate_errors(self.target):
            return getattr(self._stub, rpc)(
                request, metadata=self._metadata(), timeout=self.timeout
            )

    def describe(self, project: str, *, settings_only: bool = False) -> ProjectInfo:
        """The project as this member sees it: members, levels, latest run (audited). With
        `settings_only`, its settings alone (the mode, levels, expiry; no member and no run),
        which the matcher neither audits nor counts (a matcher older than that answers the
        whole description, audited)."""
        request = pb.DescribeProjectRequest(project=project, settings_only=settings_only)
        reply = self._retrying("describe", lambda: self._unary("DescribeProject", request))
        return convert.project_info(reply)

    def upload(
        self,
        project: str,
        encoded: Encoded,
        *,
        progress: bool = False,
        upload_id: str | None = None,
        allow_empty: bool = False,
    ) -> UploadReceipt:
        """Stream an ENCODED folder's CLKs; the matcher replaces our earlier upload (one of
        records with none only where `allow_empty`: else it refuses, before any CLK).

        Every attempt carries the same `upload_id` (a fresh random one unless
        given), so a retry after a lost acknowledgement gets the same reply and
        stores nothing twice. The progress bar counts CLKs sent in the current
        attempt and starts again from zero, saying so, when a retry restarts it.
        """
        from blindmatch.client.progress import ROWS, Progress

        key = upload_id or uuid.uuid4().hex
        bar = Progress("uploading", encoded.record_count, unit=ROWS, enabled=progress)
        attempts = [0]

        def messages() -> Iterator[pb.UploadRequest]:
            yield convert.upload_header(project, encoded, key, allow_empty)
            per_message = max(1, UPLOAD_BYTES_PER_MESSAGE // encoded.clk_bytes)
            for block in encoded.iter_chunks(per_message):
                yield pb.UploadRequest(clks=block)
                bar.update(len(block) // encoded.clk_bytes)
            bar.stage("waiting for the matcher to store it")

        def attempt() -> pb.UploadReply:
            attempts[0] += 1
            if attempts[0] > 1:
                bar.stage(f"retrying upload (attempt {attempts[0]})", encoded.record_count)
            return self._stub.Upload(messages(), metadata=self._metadata(), timeout=3600)

        try:
            return convert.upload_receipt(self._retrying("upload", attempt))
        finally:
            bar.close()

    def start_run(self, project: str) -> RunProgress:
        """Start a run, or get the one already queued or running (so safe to retry). Where
        the matcher has not answered in WAIT_SAID_SECONDS, `on_wait` is told once what it
        waits for: in a two-server project the matcher first reaches S1 and S2 (up to its
        REACH_SECONDS, 5, each try), which said nothing before (twoleft, 2026-12-07). The
        project's mode is asked first where `on_wait` is set (its settings alone: neither
        audited nor counted), so that a CLK project's wait is not said as a two-server
        one's (leftovers2)."""
        request = pb.StartRunRequest(project=project)
        waiting = "run: waiting for the matcher to start it ..."
        if self.on_wait is not None and (
            self.describe(project, settings_only=True).mode == "two-server"
        ):  # fmt: skip
            waiting = (
                "run: waiting for the matcher to start it (in a two-server project it first "
                "reaches S1 and S2, and gives up on one that does not answer in 5 s) ..."
            )
        said = threading.Timer(WAIT_SAID_SECONDS, self.on_wait or (lambda _: None),
                               args=(waiting,))  # fmt: skip
        said.daemon = True
        if self.on_wait is not None:
            said.start()
        try:
            status = self._retrying("start run", lambda: self._unary("StartRun", request))
        finally:
            said.cancel()
        return convert.run_progress(status)

    def watch_run(self, project: str, run_id: str = "") -> Iterator[RunProgress]:
        """Progress updates until the run is done or failed, reconnecting if the stream drops."""
        delays = self.retry.delays()
        while True:
            try:
                with translate_errors(self.target):
                    for status in self._stub.WatchRun(
                        pb.WatchRunRequest(project=project, run_id=run_id),
                        metadata=self._metadata(),
                    ):
                        progress = convert.run_progress(status)
                        run_id = progress.run_id
                        delays = self.retry.delays()  # progress made: patience renewed
                        yield progress
                return
            except TRANSIENT as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                if self.on_retry:
                    self.on_retry(f"watching the run: {exc}; reconnecting in {delay:.1f}s")
                time.sleep(delay)

    def results(self, project: str, purpose: str = "") -> Results:
        """Everything the project's level and the partners' consent let this member learn.

        `purpose` (a case reference) goes to the audit log; some projects require one.
        A dropped stream is fetched again from the start, never stitched together.
        """
        return self._retrying("fetch results", lambda: self._results_once(project, purpose))

    def results_to(
        self, project: str, purpose: str, consume: Callable[[Results, Iterator[ResultHit]], T]
    ) -> T:
        """`results`, without holding the hits: `consume(header, hits)` is given the results'
        header (its `hits` empty) and the hits as they arrive, batch by batch, and what it
        returns is returned. A dropped stream is fetched again from the start: the error
        passes through `consume` (which must then drop what it made of the hits so far: an
        `atomic_open` file, say) and `consume` is called again, never stitched together.
        `blindmatch results` writes its file so (since 2026-12-08, refcarry: before, every
        hit was held in memory first, about 0.5 GiB a million)."""
        return self._retrying(
            "fetch results", lambda: consume(*self._results_stream(project, purpose))
        )

    def _results_stream(self, project: str, purpose: str) -> tuple[Results, Iterator[ResultHit]]:
        chunks = iter(
            self._stub.GetResults(
                pb.ResultsRequest(project=project, purpose=purpose),
                metadata=self._metadata(),
                timeout=3600,
            )
        )
        first = next(chunks, None)
        if first is None or not first.HasField("header"):
            raise MatcherError("the matcher sent no results header")

        def hits() -> Iterator[ResultHit]:
            for chunk in chunks:
                if chunk.HasField("header"):
                    raise MatcherError("the matcher sent a second results header")
                yield from convert.result_hits(chunk.hits)

        return convert.results_header(first.header), hits()

    def _results_once(self, project: str, purpose: str) -> Results:
        results, hits = self._results_stream(project, purpose)
        results.hits.extend(hits)
        return results

    # -- real-time: standing index and queries (docs/realtime.md) -----------------------

    def change_index(
        self,
        project: str,
        *,
        clk_bits: int,
        fingerprint: bytes,
        puts: Sequence[tuple[str, bytes]] = (),
        removes: Sequence[str] = (),
        change_id: str | None = None,
        fallback_bits: int = 0,
        rule: tuple[float, float, float] | None = None,
    ) -> IndexSummary:
        """Add or replace (`puts`: (ref, CLK) pairs) and remove records, all or nothing.

        `fallback_bits`/`rule`: fallback CLK bits (0: none), `blindmatch.rule` (None). Refs: the
        member's opaque row references (`client.encoding.refs.row_refs`), never local ids.
        Durable at the matcher on return. Every attempt carries one `change_id` (random unless
        given): a retry after a lost acknowledgement gets the same summary (`replayed`).
        """
        per_message = max(1, UPLOAD_BYTES_PER_MESSAGE // max(clk_bits // 8, 1))
        header = pb.IndexHeader(project=project, clk_bits=clk_bits, fingerprint=fingerprint,
                                rule=convert.score_rule(rule))  # fmt: skip
        header.fallback_bits, header.client_change_id = fallback_bits, change_id or uuid.uuid4().hex
        header.end_follows = True  # a stream cut short is stored by no one (IndexEnd)

        def messages() -> Iterator[pb.IndexChange]:
            yield pb.IndexChange(header=header)
            for start in range(0, len(puts), per_message):
                batch = puts[start : start + per_message]
                yield pb.IndexChange(
                    put=pb.IndexPut(refs=[r for r, _ in batch], clks=b"".join(c for _, c in batch))
                )
            for start in range(0, len(removes), 50_000):
                yield pb.IndexChange(remove=pb.IndexRemove(refs=removes[start : start + 50_000]))
            yield pb.IndexChange(end=pb.IndexEnd(put_refs=len(puts), remove_refs=len(removes)))

        reply = self._retrying(
            "index change",
            lambda: self._stub.ChangeIndex(messages(), metadata=self._metadata(), timeout=3600),
        )
        return convert.index_summary(reply)

    def list_index(self, project: str) -> dict[str, bytes]:
        """This member's indexed refs, each with the digest of its CLK (`protos.wire`)."""
        listing: dict[str, bytes] = {}
        with translate_errors(self.target):
            for part in self._stub.ListIndex(
                pb.ListIndexRequest(project=project), metadata=self._metadata(), timeout=3600
            ):
                for i, ref in enumerate(part.refs):
                    listing[ref] = part.digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES]
        return listing

    def query(
        self,
        project: str,
        clks: bytes | Sequence[bytes] | SharedUpload,
        *,
        clk_bits: int,
        fingerprint: bytes,
        purpose: str,
        fallback_bits: int = 0,
        rule: tuple[float, float, float] | None = None,
        schema_digest: str = "",
        s1: str = "",
        s2: str = "",
        allow_band_keys: bool = False,
    ) -> QueryAnswer:
        """Which partners hold each of `clks` (one CLK, or several), within disclosure.

        `purpose` (a case reference, say) is required and logged with the query. The matcher
        keeps nothing of the CLKs. `fallback_bits`/`rule`: the schema's (0: not said).

        In a project in two-server mode `clks` is a `SharedUpload` of the query's CLKs
        (`client.encoding.sharing.shared_upload`; its widths say the fallback's), sent to S1
        and S2, never to the matcher (client/remote/twoserver_realtime.py `_query`);
        `schema_digest`, and S1's and S2's addresses where the ticket's are not the ones to
        use (`s1`, `s2`), go with it only; `allow_band_keys`: S1 may be sent the query's
        band keys where it asks for them (default: the query is refused instead)."""
        if not isinstance(clks, Sequence):  # (a SharedUpload)
            from blindmatch.client.remote import twoserver_realtime as two

            asked = two.two_server_records(
                self, project, clks, clk_bits=clk_bits, fingerprint=fingerprint,
                purpose=purpose, schema_digest=schema_digest, rule=rule, s1=s1, s2=s2,
                allow_band_keys=allow_band_keys,
            )  # fmt: skip
            return two._query(asked)
        _clks_only(schema_digest, s1, s2, allow_band_keys)
        scoring = (fallback_bits, rule)  # checked against each index's
        request = convert.query_request(project, clks, clk_bits, fingerprint, purpose, *scoring)
        with translate_errors(self.target):
            reply = self._stub.Query(request, metadata=self._metadata(), timeout=self.timeout)
        return convert.query_answer(reply)

    def query_session(
        self,
        project: str,
        *,
        clk_bits: int,
        fingerprint: bytes,
        fallback_bits: int = 0,
        rule: tuple[float, float, float] | None = None,
    ) -> QuerySession:
        """A session for many queries in `project`: one stream, cheaper a query than `query`
        (`fallback_bits`/`rule` as there). Use it as a context manager (or call `close`);
        see `client.remote.session`."""
        from blindmatch.client.remote.session import AsyncQuerySession, QuerySession

        return QuerySession(
            functools.partial(
                AsyncQuerySession,
                self.target,
                self.token,
                project,
                clk_bits=clk_bits,
                fingerprint=fingerprint,
                fallback_bits=fallback_bits,
                rule=rule,
                credentials=self.credentials,
                timeout=self.timeout,
                insecure=self.insecure,
            )
        )

    def watch(
        self,
        project: str,
        clks: bytes | Sequence[bytes] | SharedUpload,
        *,
        clk_bits: int,
        fingerprint: bytes,
        purpose: str,
        timeout: float | None = None,
        fallback_bits: int = 0,
        rule: tuple[float, float, float] | None = None,
        on_ready: Callable[[], None] | None = None,
        schema_digest: str = "",
        s1: str = "",
        s2: str = "",
        on_notice: Callable[[str], None] | None = None,
        band_keys: bool = False,
        allow_band_keys: bool = False,
    ) -> Iterator[WatchEvent]:
        """Events, as partners later index records matching `clks`; runs until closed.

        Only where the operator allows watching; the first event arrives once the watch
        is registered (it is not yielded: `on_ready` is called). Close the generator to
        stop watching.

        In a project in two-server mode `clks` is a `SharedUpload`, as for `query`
        (client/remote/twoserver_realtime.py `_watch`: a partner's later upload S1 blocks
        against the watch has it opened again with the band keys, and caught up, said to
        `on_notice`; `band_keys`: with them at once; both only with `allow_band_keys`, else
        the watch ends); those options go with it only.
        """
        if not isinstance(clks, Sequence):  # (a SharedUpload)
            from blindmatch.client.remote import twoserver_realtime as two

            asked = two.two_server_records(
                self, project, clks, clk_bits=clk_bits, fingerprint=fingerprint,
                purpose=purpose, schema_digest=schema_digest, rule=rule, s1=s1, s2=s2,
                allow_band_keys=allow_band_keys,
            )  # fmt: skip
            yield from two._watch(asked, timeout=timeout, on_ready=on_ready, on_notice=on_notice,
                                  band_keys=band_keys)  # fmt: skip
            return
        _clks_only(schema_digest, s1, s2, on_notice, band_keys, allow_band_keys)
        scoring = (fallback_bits, rule)  # as `query`
        request = convert.query_request(project, clks, clk_bits, fingerprint, purpose, *scoring)
        with translate_errors(self.target):
            stream = self._stub.Watch(request, metadata=self._metadata(), timeout=timeout)
            yield from convert.watch_events(stream, on_ready)


def _clks_only(*two_server_only: object) -> None:
    """A query or watch of CLKs (a CLK project's): refused any option that goes with a
    two-server project's `SharedUpload` only."""
    if any(two_server_only):
        raise ValueError(
            "schema_digest, s1, s2, on_notice, band_keys and allow_band_keys go with a "
            "two-server project's SharedUpload, not with CLKs"
        )
