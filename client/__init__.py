"""The organisation's side of blindmatch: normalise, encode, upload, fetch results.

Nothing in here sends a raw identifier, the linkage secret or a local record id
to the matcher. The public API:

- `encode_csv` / `write_encoded` / `read_encoded`: CSV export -> CLKs on disk.
- `MatcherClient`: a typed wrapper around the gRPC stub.
- `join_results`: matcher row positions -> local record ids.
"""

from blindmatch.client.encode import EncodeReport, encode_csv
from blindmatch.client.encoded import Encoded, read_encoded, write_encoded
from blindmatch.client.errors import BlindmatchError
from blindmatch.client.results import join_results

__all__ = [
    "BlindmatchError",
    "EncodeReport",
    "Encoded",
    "encode_csv",
    "join_results",
    "read_encoded",
    "write_encoded",
]
