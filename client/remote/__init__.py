"""The remote side: the matcher over gRPC, the only part of the client that knows protobuf.

    channel.py   channels, gRPC failures as our exceptions, reachability
    tls.py       TLS and mutual-TLS credentials from PEM files
    retry.py     backoff with jitter for transient failures
    convert.py   protobuf <-> the dataclasses of model.py, in one place
    model.py     what the matcher answers, as plain dataclasses
    client.py    `MatcherClient`, the typed client
    session.py   query sessions (many queries over one stream)
    index.py     a member's standing index, kept in step with an ENCODED folder

`MatcherClient` and the model's types are exported by `blindmatch.client`.
"""
