"""The linkage service: projects, members, uploads, runs, disclosure, real-time queries.

Layered, each layer importing only those before it (docs/architecture.md draws the map;
tests/test_architecture.py keeps it):

    domain.py, errors.py   the model and every limit; the exception tree
    core/                  pure rules and computation (no SQLite, no gRPC)
    storage/               the data dir
    usecases/, realtime/   what the matcher does
    rpc/, server.py        the gRPC edge, and the process that wires it all
"""
