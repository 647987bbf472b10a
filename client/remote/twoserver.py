"""A member's side of the two-server run over gRPC (docs/protocol.md "Two servers and a
combiner"): its upload (client/encoding/sharing.py `shared_upload`) sent to the three roles,
each part carrying only that role's fields, and the run started at the combiner.

In a project in two-server mode (`project_upload`) the matcher is the combiner: it gives the
member a ticket for S1 and S2, the shares go to them under it (with the popcounts' shares and,
to S1, which records lack the fallback's fields, as `upload_parts` sends them), and the
matcher then gets a header alone: how many records, and the digest of the member's second
shares (`shares_sha256`) as the upload's name; last, so that the matcher never holds a
member's upload before S1 and S2 hold theirs.

The parts each role receives are made in client/remote/twoserver_parts.py; a query's and a
watch's records are sent, and the matcher asked, in client/remote/twoserver_realtime.py.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.npzfile import Rows
from blindmatch.client.encoding.sharedfiles import UploadRows, row_ranges, rows_of
from blindmatch.client.encoding.sharing import SharedUpload
from blindmatch.client.errors import InputError, MatcherError
from blindmatch.client.remote.channel import translate_errors
from blindmatch.client.remote.convert import score_rule
from blindmatch.client.remote.model import TwoServerTicket, UploadReceipt
from blindmatch.client.remote.peers import role_channel, say_waiting
from blindmatch.client.remote.retry import RetryPolicy, is_busy
from blindmatch.client.remote.twoserver_parts import ROLES, part_bytes, upload_bytes, upload_parts
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

RUN_SECONDS = 24 * 3600.0
# An upload S1 or S2 refuses as busy (RESOURCE_EXHAUSTED marked retryable: its members'
# uploads open at once are capped, rpc/twoserver_uploadguard.py) is sent again after a
# backoff, about 20 s in all: many members' queries at once then wait rather than fail.
BUSY_RETRY = RetryPolicy(attempts=8, initial_delay=0.2, max_delay=5.0)

if TYPE_CHECKING:
    from blindmatch.client.remote.client import MatcherClient


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
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """`channel`: to `target`, kept by the caller (`close` leaves it open: `peer_channel`);
        None: one of its own, closed by `close`. `on_wait`: told once where an upload waits
        for the role to answer (`say_waiting`)."""
        if role not in ROLES:
            raise ValueError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
        self.role, self.target = role, target
        self.party = {"s1": "S1", "s2": "S2", "combiner": "the combiner"}[role]
        self._own, self._on_wait = channel is None, on_wait
        self._channel = channel or role_channel(target, credentials, insecure)
        self._metadata = (("authorization", f"Bearer {key}"),)
        # Made here, not at the call: a call on a thread of its own may find the channel
        # closed already (a Ctrl-C, twoserver_realtime.py `send_records`), which refuses it;
        # gRPC (1.85) crashes the process making a stub on a closed channel.
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
        upload: SharedUpload | UploadRows,
        rule: tuple[float, float, float] | None = None,
        keys: bool = True,
        progress: bool = False,
    ) -> int:
        """Send `member`'s upload (this role's part of it, with the schema's `rule`; to S1
        without band keys unless `keys`, `upload_parts`); the records the role holds. With
        `progress`, the bytes sent so far of all this role's part (`upload_bytes`: its shares
        and, to S1, its band keys as sealed, which they are as they go, about three times its
        file of about 42 kB a record: 76 MB for 600 records; 12 s for 6,000 on loopback),
        counted afresh when a busy role's refusal sends it again, then a line while the role
        stores it."""
        from blindmatch.client.progress import Progress

        # In bytes: S2's part (no band keys) is under a megabyte for a few thousand records,
        # and a count in whole megabytes never showed it (before 2026-12-06).
        what = "bytes as sent, band keys sealed" if self.role == "s1" and keys else "bytes as sent"
        desc = f"uploading to {self.party} ({what})"
        total = upload_bytes(self.role, upload, keys) if progress else None
        bar = Progress(desc, total or None, enabled=progress, in_bytes=True)
        tries = 0

        def counted() -> Iterator[pb.SharedPart]:
            nonlocal tries
            tries += 1
            if tries > 1:  # a busy role's refusal: sent again, from its first byte
                bar.stage(f"{desc} again ({self.party} was busy)", total or None)
            for part in upload_parts(member, self.role, upload, rule, keys):
                yield part
                bar.update(part_bytes(part))
            bar.stage(f"waiting for {self.party} to store it")

        try:
            say_waiting(self._channel, self.party, self.target, self._on_wait)
            with translate_errors(self.target, self.party):
                reply = self._upload_when_free(counted)
        finally:
            bar.close()
        return int(reply.records)

    def _upload_when_free(self, parts: Callable[[], Iterator[pb.SharedPart]]) -> pb.SharedReceipt:
        """The upload of `parts()`, sent again (a new stream) while the role refuses it as
        busy, up to `BUSY_RETRY`'s attempts; any other failure at once."""
        delays = BUSY_RETRY.delays()
        while True:
            try:
                return self._stub.Upload(parts(), metadata=self._metadata)
            except grpc.RpcError as exc:
                delay = next(delays, None) if is_busy(exc) else None
                if delay is None:
                    raise
                time.sleep(delay)

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


def shares_sha256(second: Sequence[Rows]) -> str:
    """The SHA-256 a two-server project upload is acknowledged with: of the member's second
    XOR shares (S2's, every CLK in order), uniformly random bytes that say nothing of the
    records but name this encoding's upload (`encode --two-server` draws them afresh). Read
    a range of rows at a time (`second` may be read from its file, `open_shared`)."""
    digest = hashlib.sha256()
    for shares in second:
        for rows in row_ranges(shares):
            digest.update(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())
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
    if not also or client.describe(project, settings_only=True).mode != "two-server":
        return encoded.sha256
    return also


def ticket(
    client: MatcherClient,
    project: str,
    planned: pb.UploadHeader | None = None,
    query: bool = False,
) -> TwoServerTicket:
    """The matcher's ticket for this member's next upload to S1 and S2 (`query`: for a
    query's records, `MatcherClient.query`: twoserver_realtime.py `_query`). `planned`: the
    header the upload will carry, which the matcher checks against the project's uploads
    first (refused: RejectedError, and nothing is sent anywhere)."""
    request = pb.TwoServerTicketRequest(project=project, upload=planned, query=query)
    reply = client._retrying(
        "two-server ticket",
        lambda: client._stub.TwoServerTicket(request, metadata=client._metadata(),
                                             timeout=client.timeout),
    )  # fmt: skip
    return TwoServerTicket(reply.ticket, reply.name, reply.s1, reply.s2, reply.expires_unix)


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
    upload: SharedUpload | UploadRows,
    *,
    s1: str = "",
    s2: str = "",
    say: Callable[[str], None] | None = None,
    progress: bool = False,
    allow_empty: bool = False,
) -> ProjectUpload:
    """Send a member's two-server upload in a project in two-server mode: a ticket from the
    matcher for the header the upload will carry (an encoding that differs from the
    project's other uploads is refused there, before any share leaves), the shares to S1
    and S2 (at the matcher's addresses unless `s1`/`s2` given, reached as the matcher is),
    then the header alone to the matcher (how many records; no popcount, no share). A part
    refused after that stops it: the matcher then holds the member's earlier upload (or
    none), which a run refuses while S1 or S2 holds another, so nothing runs on half an
    upload. `upload`: in memory, or read from its files a part at a time (`open_shared`);
    `progress`: each role's part as it goes, on stderr (`RoleClient.upload`); `allow_empty`:
    no records may replace the member's current upload of some (else the ticket is refused)."""
    upload = rows_of(upload)
    if len(upload) != encoded.record_count:
        raise InputError(
            f"{encoded.path}: its two-server upload holds {len(upload)} records, its CLKs "
            f"{encoded.record_count}: encode it again with --two-server"
        )
    header = pb.UploadHeader(
        project=project, clk_bits=0, record_count=len(upload),
        fingerprint=encoded.fingerprint, sha256=shares_sha256(upload.shares["s2"]),
        schema_digest=encoded.schema_digest, rule=score_rule(encoded.rule),
        two_server_bits=[8 * s.shape[1] for s in upload.shares["s2"]], allow_empty=allow_empty,
    )  # fmt: skip
    t = ticket(client, project, header)
    where = {"s1": s1 or t.s1, "s2": s2 or t.s2}
    holding: list[str] = []  # the parties that hold this upload now
    try:
        for role in ("s1", "s2"):
            with RoleClient(role, where[role], t.ticket, client.credentials,
                            insecure=client.insecure, on_wait=client.on_wait) as c:  # fmt: skip
                held = c.upload(t.name, upload, encoded.rule, progress=progress)
            holding.append(f"{c.party} ({where[role]})")
            if say is not None:
                say(f"{c.party} ({where[role]}) holds {held} records (shares only)")
        header.client_upload_id, header.two_server_ticket = uuid.uuid4().hex, t.ticket

        def messages() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=header)  # the header alone: no record goes here

        reply = client._retrying(
            "upload",
            lambda: client._stub.Upload(messages(), metadata=client._metadata(), timeout=3600),
        )
    except MatcherError as exc:
        error = half_sent(exc, holding)
        if error is exc:
            raise
        raise error from None
    receipt = UploadReceipt(reply.upload_id, reply.record_count, reply.sha256, reply.replayed)
    return ProjectUpload(t.name, where["s1"], where["s2"], receipt)


def half_sent(exc: MatcherError, holding: list[str]) -> MatcherError:
    """`exc` (a part of a project upload failed), saying where the member's uploads stand:
    a party that took this upload dropped the member's earlier one there (docs/operations.md
    "Nothing runs on half an upload"), so a run fails naming the member until it uploads
    again. The same class (exit code) and trailing metadata. Nothing is added where no party
    took it (S1 failing may or may not have stored it: it said what it did)."""
    if not holding:
        return exc
    note = (
        f"{' and '.join(holding)} {'holds' if len(holding) == 1 else 'hold'} this upload "
        "now, in place of your earlier one there, and the rest of the project does not: "
        "a run fails naming you until you upload again (`blindmatch upload`, once the "
        "party above answers)"
    )
    text = str(exc)
    status = text.rfind(" [")
    if status > 0 and text.endswith("]"):
        text = f"{text[:status]}; {note}{text[status:]}"
    else:
        text = f"{text}; {note}"
    error = type(exc)(text)
    error.trailing = exc.trailing
    return error


__all__ = [
    "ProjectUpload",
    "RoleClient",
    "TwoServerLinks",
    "acknowledged_sha256",
    "folder_sha256",
    "project_upload",
    "shares_sha256",
    "ticket",
    "upload_parts",
]
