"""The gRPC contract, and the Python modules generated from it by `make protos`.

Both the client and the matcher import these. The generated modules (`*_pb2*`) are
never edited by hand; `blindmatch.proto` is the source, `wire.py` what the contract
fixes beyond message shapes (the ListIndex digest), `freshness.py` the staleness check.
"""
