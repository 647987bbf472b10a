"""Valid requests the RPC fuzzer (benchmarks/rpcfuzz.py) starts from, built from constants
alone (no server needed): the operator's token, CLKs, an upload's messages, a look-up server's
load part, S1's and S2's circuit batches and block deals, S1's proposal request. The servers
are in benchmarks/rpcfuzz_world.py, the seeds (a valid request of every RPC) in
benchmarks/rpcfuzz_seeds.py."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import numpy as np

from blindmatch.matcher.core import linkbit
from blindmatch.protos import blindmatch_pb2 as pb

ADMIN = "bm_admin_fuzz_" + secrets.token_hex(8)
ROWS = 20  # records of each role upload
FP = bytes(32)
INDEXED: dict[str, Any] = dict(clk_bits=1024, fingerprint=FP)  # an index's layout


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def clks(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n * 128, dtype=np.uint8).tobytes()


def upload_messages(project: str, data: bytes) -> list[pb.UploadRequest]:
    header = pb.UploadHeader(
        project=project,
        clk_bits=1024,
        record_count=len(data) // 128,
        fingerprint=FP,
        sha256=hashlib.sha256(data).hexdigest(),
        client_upload_id=secrets.token_hex(6),
    )
    return [pb.UploadRequest(header=header), pb.UploadRequest(clks=data)]


def load_part(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        shard=0,
        shards=1,
        project="trial",
        member="south",
        clk_bits=1024,
        threshold=0.8,
        refs=["s9"],
        clks=clks(1, 5),
    )
    return {**base, **fields}


def circuit_batch(who: int, **fields: Any) -> pb.CircuitBatch:
    dealt = linkbit.deal(linkbit.circuit(1024, (0.8,)), 2)
    base: dict[str, Any] = dict(
        batch=secrets.token_hex(4),
        member_a="north",
        member_b="south",
        records_a=ROWS,
        records_b=ROWS,
        clk=0,
        rows_a=np.array([0, 1], "<u4").tobytes(),
        rows_b=np.array([1, 2], "<u4").tobytes(),
        cutoffs=[0.8],
        setup=dealt.to_s2 if who else dealt.to_s1,
    )
    return pb.CircuitBatch(**{**base, **fields})


def propose_request() -> pb.ProposeRequest:
    return pb.ProposeRequest(members=["north", "south"], records=[ROWS, ROWS], threshold=0.8)


def block_deal(who: int) -> pb.BlockDeal:
    """C's deal of one block of every north x south pair (part 0) for S1 (0) or S2 (1)."""
    from blindmatch.matcher.core import densearith

    dealt = densearith.deal(densearith.Shape(ROWS, ROWS, (1024,)))
    return pb.BlockDeal(blocks=secrets.token_hex(4), member_a="north", member_b="south",
                        records_a=ROWS, records_b=ROWS, clk=0, part=0, rows_a=[ROWS],
                        rows_b=[ROWS], cutoffs=[0.8],
                        setup=dealt.to_s2 if who else dealt.to_s1)  # fmt: skip


def deal_parts(deal: pb.BlockDeal) -> list[pb.BlockDeal]:
    head = pb.BlockDeal()
    head.CopyFrom(deal)
    head.setup = b""
    return [head, pb.BlockDeal(setup=deal.setup)]
