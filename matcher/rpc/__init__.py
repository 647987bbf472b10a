"""The gRPC edge: who is calling, what they may do, and protobuf in and out.

auth.py       the interceptor that authenticates every call from its metadata, before
              any request message is read; the per-RPC authorisation rules
servicer.py   MatcherService: each RPC converts its request, calls a use case or the
              real-time engine, and converts the answer back
convert.py    protobuf messages <-> domain types
status.py     the matcher's exceptions -> gRPC status codes, in one place
streams.py    per-member limits on calls in flight, and the open query streams
"""
