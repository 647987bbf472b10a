"""A member's side of the two-server run over gRPC (docs/protocol.md "Two servers and a
combiner"): its upload (client/encoding/sharing.py `shared_upload`) sent to the three roles,
each part carrying only that role's fields, and the run started at the combiner.

In a project in two-server mode (`project_upload`) the matcher is the combiner: it gives the
member a ticket for S1 and S2, the shares go to them under it (with the popcounts' shares and,
to S1, which records lack the fallback's fields, as `upload_parts` sends them), and the
matcher then gets a header alone: how many records, and the digest of the member's second
shares (`shares_sha256`) as the upload's name; last, so that the matcher never holds a
member's upload before S1 and S2 hold theirs.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.sharing import SealedBands, SharedUpload
from blindmatch.client.errors import InputError, RejectedError
from blindmatch.client.remote.channel import translate_errors
from blindmatch.client.remote.convert import query_answer, score_rule, watch_event
from blindmatch.client.remote.model import QueryAnswer, TwoServerTicket, UploadReceipt, WatchEvent
from blindmatch.client.remote.peers import (
    drop_peer_channels,
    peer_channel,
    role_channel,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from blindmatch.protos.wire import BAND_KEYS_NEEDED

ROLES = ("s1", "s2", "combiner")
PART_BYTES = 8 * 1024 * 1024  # a part's keys or shares, well below the roles' message limit
RUN_SECONDS = 24 * 3600.0
QUERY_SECONDS = 300.0  # a two-server query: S1 joins each partner's band keys, then the circuit

if TYPE_CHECKING:
    from blindmatch.client.remote.client import MatcherClient


def upload_parts(
    member: str,
    role: str,
    upload: SharedUpload,
    rule: tuple[float, float, float] | None = None,
    keys: bool = True,
) -> Iterator[pb.SharedPart]:
    """`upload` as the parts `role` receives: S1 first shares (of the CLKs and their popcounts),
    which records lack the fallback's fields, then sealed band keys (band ranges, in parts of no
    rows; not `keys`: none, every part `band_keys_withheld`, a query's records only:
    docs/protocol.md "A query without band keys"); S2 second shares (of both) and the seal key
    (every part); the combiner how many records (no popcount); each CLK in parts of at most
    about PART_BYTES a field. Every part carries the schema's `rule` (None: none), which a run
    applies on the shares of both CLKs where every member's upload carries the same one."""
    wired = score_rule(rule)
    for part in _parts(member, role, upload, keys):
        if wired is not None:
            part.rule.CopyFrom(wired)
        yield part


def _parts(member: str, role: str, upload: SharedUpload, keys: bool) -> Iterator[pb.SharedPart]:
    if role not in ROLES:
        raise ValueError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
    for clk, pops in enumerate(upload.combiner.popcounts):
        shares = upload.s1.shares[clk] if role == "s1" else upload.s2.shares[clk]
        width = shares.shape[1]
        bands = upload.s1.bands[clk]
        step = max(1, PART_BYTES // width)
        rows = len(pops) if role == "combiner" else len(shares)
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            part = pb.SharedPart(member=member, clk=clk, clk_bits=8 * width, rows=hi - lo)
            if role == "s1":
                part.bands = bands.bands
                part.band_keys_withheld = not keys
            if role == "s2":
                part.seal_key = upload.s2.seal_key
            if role != "combiner":
                part.shares = np.ascontiguousarray(shares[lo:hi]).tobytes()
                held = upload.s1.popcounts if role == "s1" else upload.s2.popcounts
                part.popcount_shares = np.ascontiguousarray(held[clk][lo:hi], "<u4").tobytes()
            if role == "s1" and clk == 1 and upload.s1.lacking is not None:
                bits = np.packbits(upload.s1.lacking[lo:hi], bitorder="little")
                part.lacking = bits.tobytes()
            yield part
        if role == "s1" and keys:
            yield from _sealed_parts(member, clk, 8 * width, bands)


def _sealed_parts(
    member: str, clk: int, clk_bits: int, bands: SealedBands
) -> Iterator[pb.SharedPart]:
    """A CLK's sealed band keys as S1's parts of no rows, whole bands a part."""
    offsets = bands.offsets()
    ends = np.concatenate([[0], np.cumsum(bands.counts)])
    n = len(bands.counts)
    band_end = offsets[ends[1:]]  # where each band's tokens end, in bytes (ascending)
    band = 0
    while band < n:
        # At least one band a part, then as many as fit: the first band ending past
        # PART_BYTES from this one's start is the next part's.
        fits = int(np.searchsorted(band_end, offsets[ends[band]] + PART_BYTES, side="right"))
        last = max(band + 1, min(fits, n))
        k0, k1 = int(ends[band]), int(ends[last])
        yield pb.SharedPart(
            member=member, clk=clk, clk_bits=clk_bits, rows=0, bands=bands.bands,
            band_lo=band, band_counts=bands.counts[band:last].tolist(),
            band_keys=np.ascontiguousarray(bands.keys[k0:k1], "<u8").tobytes(),
            classes=bands.classes[k0:k1].tobytes(),
            sealed=bands.sealed[offsets[k0] : offsets[k1]].tobytes(),
        )  # fmt: skip
        band = last


@dataclass
class TwoServerLinks:
    """A two-server run's links (dataset k = members[k]), as a run's results."""

    members: list[str]
    dset: npt.NDArray[np.uint32]
    row: npt.NDArray[np.uint32]
    partner: npt.NDArray[np.uint32]
    partner_row: npt.NDArray[np.uint32]
    score: npt.NDArray[np.float64]
    groups: int
    comparisons: int
    method: str
    bytes_sent: dict[str, int] = field(default_factory=dict)
    rounds: int = 0


class RoleClient:
    """One role's address: a member's uploads to it, or (the combiner) a run."""

    def __init__(
        self,
        role: str,
        target: str,
        key: str,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        insecure: bool = False,
        channel: grpc.Channel | None = None,
    ) -> None:
        """`channel`: to `target`, kept by the caller (`close` leaves it open: `peer_channel`);
        None: one of its own, closed by `close`."""
        if role not in ROLES:
            raise ValueError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
        self.role, self.target = role, target
        self.party = {"s1": "S1", "s2": "S2", "combiner": "the combiner"}[role]
        self._own = channel is None
        self._channel = channel or role_channel(target, credentials, insecure)
        self._metadata = (("authorization", f"Bearer {key}"),)
        # Made here, not at the call: a call on a thread of its own may find the channel
        # closed already (a Ctrl-C, `_send_records`), which refuses it; gRPC (1.85) crashes
        # the process making a stub on a closed channel.
        self._stub: pb_grpc.TwoServerBlockingStub | pb_grpc.TwoServerSharesStub | (
            pb_grpc.TwoServerCombinerStub
        ) = (
            pb_grpc.TwoServerBlockingStub(self._channel) if role == "s1"
            else pb_grpc.TwoServerSharesStub(self._channel) if role == "s2"
            else pb_grpc.TwoServerCombinerStub(self._channel)
        )  # fmt: skip

    def close(self) -> None:
        if self._own:
            self._channel.close()

    def __enter__(self) -> RoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upload(
        self,
        member: str,
        upload: SharedUpload,
        rule: tuple[float, float, float] | None = None,
        keys: bool = True,
    ) -> int:
        """Send `member`'s upload (this role's part of it, with the schema's `rule`; to S1
        without band keys unless `keys`, `upload_parts`); the records the role holds."""
        with translate_errors(self.target, self.party):
            parts = upload_parts(member, self.role, upload, rule, keys)
            reply = self._stub.Upload(parts, metadata=self._metadata)
        return int(reply.records)

    def run(
        self, threshold: float, members: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> TwoServerLinks:
        """The run (the combiner only)."""
        if self.role != "combiner":
            raise ValueError("a run is started at the combiner")
        stub = cast(pb_grpc.TwoServerCombinerStub, self._stub)
        request = pb.TwoServerRunRequest(
            members=list(members), threshold=threshold, buckets=list(buckets)
        )
        with translate_errors(self.target, self.party):
            r = stub.Run(request, metadata=self._metadata, timeout=RUN_SECONDS)
        return TwoServerLinks(
            list(r.members),
            np.asarray(r.dset, dtype=np.uint32),
            np.asarray(r.row, dtype=np.uint32),
            np.asarray(r.partner, dtype=np.uint32),
            np.asarray(r.partner_row, dtype=np.uint32),
            np.asarray(r.score, dtype=np.float64),
            int(r.groups),
            int(r.comparisons),
            r.method,
            dict(r.bytes_sent),
            int(r.rounds),
        )


def shares_sha256(second: Sequence[npt.NDArray[np.uint8]]) -> str:
    """The SHA-256 a two-server project upload is acknowledged with: of the member's second
    XOR shares (S2's, every CLK in order), uniformly random bytes that say nothing of the
    records but name this encoding's upload (`encode --two-server` draws them afresh)."""
    digest = hashlib.sha256()
    for shares in second:
        digest.update(np.ascontiguousarray(shares, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def folder_sha256(encoded: Encoded) -> str:
    """The SHA-256 the matcher acknowledges an ENCODED folder's two-server upload with (its
    `twoserver/` second shares, `shares_sha256`); "" for a folder without one."""
    from blindmatch.client.encoding.sharing import SHARED_FILES, SHARED_FOLDER

    path = encoded.path / SHARED_FOLDER / SHARED_FILES["s2"]
    if not path.parent.is_dir():
        return ""
    try:
        with np.load(path, allow_pickle=False) as f:
            n = sum(1 for k in f.files if k.startswith("shares_"))
            shares = [f[f"shares_{k}"] for k in range(n)]
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a two-server upload file ({exc})") from None
    return shares_sha256(shares)


def acknowledged_sha256(client: MatcherClient, project: str, encoded: Encoded) -> str:
    """The SHA-256 the matcher acknowledged this folder's upload to `project` with, which a
    request names its rows by: the CLKs', or in a two-server project its two-server
    upload's (asked of the matcher only for a folder that has one)."""
    also = folder_sha256(encoded)
    if not also or client.describe(project).mode != "two-server":
        return encoded.sha256
    return also


NOT_TWO_SERVER = "is not a two-server project"  # the matcher's refusal of a CLK project's


def ticket(
    client: MatcherClient,
    project: str,
    planned: pb.UploadHeader | None = None,
    query: bool = False,
) -> TwoServerTicket:
    """The matcher's ticket for this member's next upload to S1 and S2 (`query`: for a
    query's records, `project_query`). `planned`: the header the upload will carry, which the
    matcher checks against the project's uploads first (refused: RejectedError, and nothing
    is sent anywhere)."""
    request = pb.TwoServerTicketRequest(project=project, upload=planned, query=query)
    reply = client._retrying(
        "two-server ticket",
        lambda: client._stub.TwoServerTicket(request, metadata=client._metadata(),
                                             timeout=client.timeout),
    )  # fmt: skip
    return TwoServerTicket(reply.ticket, reply.name, reply.s1, reply.s2, reply.expires_unix)


def ticket_if_two_server(client: MatcherClient, project: str) -> TwoServerTicket | None:
    """A ticket when `project` is in two-server mode; None for a CLK project (asking
    stores and audits nothing)."""
    try:
        return ticket(client, project)
    except RejectedError as exc:
        if NOT_TWO_SERVER in str(exc):
            return None
        raise


@dataclass(frozen=True)
class ProjectUpload:
    """A two-server project upload sent: S1's and S2's addresses, and the matcher's receipt."""

    name: str  # the upload's name at S1 and S2
    s1: str
    s2: str
    receipt: UploadReceipt


def project_upload(
    client: MatcherClient,
    project: str,
    encoded: Encoded,
    upload: SharedUpload,
    *,
    s1: str = "",
    s2: str = "",
    say: Callable[[str], None] | None = None,
) -> ProjectUpload:
    """Send a member's two-server upload in a project in two-server mode: a ticket from the
    matcher for the header the upload will carry (an encoding that differs from the
    project's other uploads is refused there, before any share leaves), the shares to S1
    and S2 (at the matcher's addresses unless `s1`/`s2` given, reached as the matcher is),
    then the header alone to the matcher (how many records; no popcount, no share). A part
    refused after that stops it: the matcher then holds the member's earlier upload (or
    none), which a run refuses while S1 or S2 holds another, so nothing runs on half an
    upload."""
    if len(upload) != encoded.record_count:
        raise InputError(
            f"{encoded.path}: its two-server upload holds {len(upload)} records, its CLKs "
            f"{encoded.record_count}: encode it again with --two-server"
        )
    header = pb.UploadHeader(
        project=project, clk_bits=0, record_count=len(upload),
        fingerprint=encoded.fingerprint, sha256=shares_sha256(upload.s2.shares),
        schema_digest=encoded.schema_digest, rule=score_rule(encoded.rule),
        two_server_bits=[8 * s.shape[1] for s in upload.s2.shares],
    )  # fmt: skip
    t = ticket(client, project, header)
    where = {"s1": s1 or t.s1, "s2": s2 or t.s2}
    for role in ("s1", "s2"):
        with RoleClient(role, where[role], t.ticket, client.credentials,
                        insecure=client.insecure) as c:  # fmt: skip
            held = c.upload(t.name, upload, encoded.rule)
        if say is not None:
            say(f"{c.party} ({where[role]}) holds {held} records (shares only)")
    header.client_upload_id, header.two_server_ticket = uuid.uuid4().hex, t.ticket

    def messages() -> Iterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=header)  # the header alone: no record goes here

    reply = client._retrying(
        "upload",
        lambda: client._stub.Upload(messages(), metadata=client._metadata(), timeout=3600),
    )
    receipt = UploadReceipt(reply.upload_id, reply.record_count, reply.sha256, reply.replayed)
    return ProjectUpload(t.name, where["s1"], where["s2"], receipt)


def _send_records(
    client: MatcherClient,
    project: str,
    upload: SharedUpload,
    fingerprint: bytes,
    schema_digest: str,
    rule: tuple[float, float, float] | None,
    s1: str,
    s2: str,
    keys: bool = True,
) -> TwoServerTicket:
    """A query's (or a watch's) records to S1 and S2 under a query ticket (checked against the
    project's uploads first; to S1 without band keys unless `keys`); the ticket. Stopped (a
    Ctrl-C, SIGTERM as `watch` raises it) it returns at once, both uploads ended where they
    were; what reached S1 or S2 the matcher has them forget once the ticket expires unclaimed
    (docs/realtime.md "A query or watch stopped while its records are sent")."""
    widths = [8 * s.shape[1] for s in upload.s2.shares]
    header = pb.UploadHeader(
        project=project, clk_bits=0, record_count=len(upload), fingerprint=fingerprint,
        sha256=shares_sha256(upload.s2.shares), schema_digest=schema_digest,
        rule=score_rule(rule), two_server_bits=widths,
    )  # fmt: skip
    t = ticket(client, project, header, query=True)
    where = {"s1": s1 or t.s1, "s2": s2 or t.s2}
    roles = {role: RoleClient(role, where[role], t.ticket, client.credentials,
                              insecure=client.insecure,
                              channel=peer_channel(client, where[role]))
             for role in ("s1", "s2")}  # fmt: skip
    failed: dict[str, BaseException] = {}

    def send(role: str) -> None:
        try:
            roles[role].upload(t.name, upload, rule, keys)
        except BaseException as exc:  # (its thread's end: told to the caller below)
            failed[role] = exc

    # To S1 and S2 at once (S2's part is small: it waits on S1's), each on a daemon thread,
    # over the channels the client keeps to them: a Ctrl-C or SIGTERM while they are sent
    # closes both channels, which ends both uploads at once, and neither is waited for (nor
    # holds the process at its exit).
    sending = [threading.Thread(target=send, args=(role,), daemon=True,
                                name=f"bm-query-upload-{role}") for role in roles]  # fmt: skip
    try:
        for thread in sending:
            thread.start()
        for thread in sending:
            thread.join()
    except BaseException:
        drop_peer_channels(client)
        raise
    for role in roles:  # S1's error first
        if role in failed:
            raise failed[role]
    return t


def _request(
    project: str, upload: SharedUpload, t: TwoServerTicket, clk_bits: int, fingerprint: bytes,
    purpose: str, rule: tuple[float, float, float] | None,
) -> pb.QueryRequest:  # fmt: skip
    widths = [8 * s.shape[1] for s in upload.s2.shares]
    return pb.QueryRequest(
        project=project, purpose=purpose, clk_bits=clk_bits, fingerprint=fingerprint,
        fallback_bits=widths[1] if len(widths) > 1 else 0, rule=score_rule(rule),
        two_server_ticket=t.ticket, two_server_records=len(upload),
    )  # fmt: skip


def project_query(
    client: MatcherClient,
    project: str,
    upload: SharedUpload,
    *,
    clk_bits: int,
    fingerprint: bytes,
    purpose: str,
    schema_digest: str = "",
    rule: tuple[float, float, float] | None = None,
    s1: str = "",
    s2: str = "",
) -> QueryAnswer:
    """A query in a project in two-server mode (docs/realtime.md "Queries in a two-server
    project"): the query's records, encoded as `encode --two-server` encodes an upload
    (`upload`: `shared_upload` of their CLKs, `clk_bits` wide with the fallback), go to S1
    and S2 under a query ticket (checked against the project's uploads first), then the
    matcher answers which partners' current uploads hold each, and has S1 and S2 forget them.
    The matcher receives no CLK: the header's facts (widths, fingerprint, rule) only.

    The records go to S1 without their band keys first: where S1 blocks the query against a
    partner (an upload over its unblocked bound) the matcher refuses it `band_keys_needed`,
    costing nothing, and they go again with their keys under a fresh ticket (docs/protocol.md
    "A query without band keys")."""
    for keys in (False, True):
        t = _send_records(client, project, upload, fingerprint, schema_digest, rule, s1, s2,
                          keys)  # fmt: skip
        request = _request(project, upload, t, clk_bits, fingerprint, purpose, rule)
        try:
            with translate_errors(client.target):
                reply = client._stub.Query(request, metadata=client._metadata(),
                                           timeout=max(client.timeout, QUERY_SECONDS))  # fmt: skip
        except RejectedError as exc:
            if keys or BAND_KEYS_NEEDED not in str(exc):
                raise
            continue
        return query_answer(reply)
    raise AssertionError("unreachable: the second try sends the keys")


def project_watch(
    client: MatcherClient,
    project: str,
    upload: SharedUpload,
    *,
    clk_bits: int,
    fingerprint: bytes,
    purpose: str,
    schema_digest: str = "",
    rule: tuple[float, float, float] | None = None,
    s1: str = "",
    s2: str = "",
    timeout: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Iterator[WatchEvent]:
    """A watch in a project in two-server mode (docs/realtime.md "Watching for later
    matches"): the watched records go to S1 and S2 as a query's do (`project_query`), but
    with their band keys at once (they meet partners' later uploads, of sizes unknown), then
    the matcher's Watch stream tells of each partner's later upload that holds one of them,
    as `MatcherClient.watch` does; S1 and S2 forget them when the watch ends. Runs until
    closed; the records are sent when the generator is first advanced, and `on_ready` is
    called once the matcher has registered the watch."""
    t = _send_records(client, project, upload, fingerprint, schema_digest, rule, s1, s2)
    request = _request(project, upload, t, clk_bits, fingerprint, purpose, rule)
    with translate_errors(client.target):
        stream = client._stub.Watch(request, metadata=client._metadata(), timeout=timeout)
        try:
            for message in stream:
                event = watch_event(message)
                if event is not None:
                    yield event
                elif on_ready is not None:
                    on_ready()
        finally:
            stream.cancel()
