"""The organisation's side of blindmatch: normalise, encode, upload, fetch results.

Nothing in here sends a raw identifier, the linkage secret or a local record id
to the matcher. Three parts, apart:

- `client.encoding`: a CSV export -> CLKs on disk, offline (`encode_csv`,
  `write_encoded`, `read_encoded`).
- `client.remote`: the matcher over gRPC (`MatcherClient`), the only part that
  knows protobuf; it returns plain dataclasses.
- `client.tools`: privacy check, evaluation, synthetic data, demo, certificates.

and, between them, `join_results` (matcher row positions -> local record ids),
`client.files` (atomic writes) and `client.errors` (the exception tree).

The names below are imported when first used, so importing one small module of the
client (the command line does, to start quickly) does not load clkhash, numpy or gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blindmatch.client.encoding.encode import EncodeReport, encode_csv
    from blindmatch.client.encoding.encoded import Encoded, read_encoded, write_encoded
    from blindmatch.client.errors import BlindmatchError
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.model import (
        BLOCKINGS,
        LEVELS,
        AuditCheck,
        Erased,
        IndexSummary,
        MemberState,
        MemberVolume,
        PartnerMatch,
        ProjectInfo,
        ProjectTokens,
        QueryAnswer,
        QueryLimits,
        ResultHit,
        Results,
        RunProgress,
        UploadReceipt,
        UserVolume,
        WatchEvent,
    )
    from blindmatch.client.results import join_results

_WHERE = {
    "BlindmatchError": "blindmatch.client.errors",
    "EncodeReport": "blindmatch.client.encoding.encode",
    "Encoded": "blindmatch.client.encoding.encoded",
    "MatcherClient": "blindmatch.client.remote.client",
    "BLOCKINGS": "blindmatch.client.remote.model",
    "LEVELS": "blindmatch.client.remote.model",
    "AuditCheck": "blindmatch.client.remote.model",
    "Erased": "blindmatch.client.remote.model",
    "IndexSummary": "blindmatch.client.remote.model",
    "MemberState": "blindmatch.client.remote.model",
    "MemberVolume": "blindmatch.client.remote.model",
    "PartnerMatch": "blindmatch.client.remote.model",
    "ProjectInfo": "blindmatch.client.remote.model",
    "ProjectTokens": "blindmatch.client.remote.model",
    "QueryAnswer": "blindmatch.client.remote.model",
    "QueryLimits": "blindmatch.client.remote.model",
    "ResultHit": "blindmatch.client.remote.model",
    "Results": "blindmatch.client.remote.model",
    "RunProgress": "blindmatch.client.remote.model",
    "UploadReceipt": "blindmatch.client.remote.model",
    "UserVolume": "blindmatch.client.remote.model",
    "WatchEvent": "blindmatch.client.remote.model",
    "encode_csv": "blindmatch.client.encoding.encode",
    "join_results": "blindmatch.client.results",
    "read_encoded": "blindmatch.client.encoding.encoded",
    "write_encoded": "blindmatch.client.encoding.encoded",
}

__all__ = [
    "BLOCKINGS",
    "LEVELS",
    "AuditCheck",
    "BlindmatchError",
    "EncodeReport",
    "Encoded",
    "Erased",
    "IndexSummary",
    "MatcherClient",
    "MemberState",
    "MemberVolume",
    "PartnerMatch",
    "ProjectInfo",
    "ProjectTokens",
    "QueryAnswer",
    "QueryLimits",
    "ResultHit",
    "Results",
    "RunProgress",
    "UploadReceipt",
    "UserVolume",
    "WatchEvent",
    "encode_csv",
    "join_results",
    "read_encoded",
    "write_encoded",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
