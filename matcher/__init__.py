"""The linkage service: projects, members, uploads, runs, disclosure, storage.

Core logic (`compare`, `solve`, `disclose`) is plain functions over arrays;
`store` owns the data dir; `service` and `server` are the gRPC edge.
"""
