"""The pure core: matching, disclosure and the matcher's rules, as functions over arrays.

Nothing here touches SQLite, files of the data dir, gRPC or protobuf (tests/test_architecture.py
checks): storage, the use cases and the gRPC edge call in, never the other way.
"""
