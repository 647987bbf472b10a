"""The gRPC contract, and the Python modules generated from it by `make protos`.

Both the client and the matcher import these; nothing here is edited by hand
except this file and `blindmatch.proto`.
"""
