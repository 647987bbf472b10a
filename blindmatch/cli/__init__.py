"""The `blindmatch` command line, above both the client and the matcher.

One module per command group, each holding its commands' handlers with their options:

    serve.py      serve                       run the matcher (daskopts.py: its cluster options)
    project.py    project create|rotate-token|revoke-token|show
    admin.py      admin check|backup|query-limits|query-report
    audit.py      audit export|verify
    encoding.py   encode, schema check        local and offline
    secret.py     secret new|keygen|seal|open the linkage secret, among members
    batch.py      upload, run, results, report   the batch flow
    member.py     consent set, erase          a member's control over its data
    realtime.py   index add|remove|sync|show, query
    watch.py      watch                       told of partners' later matches
    checks.py     evaluate, privacy-check
    certs.py      certs
    demo.py       demo

`options.py` holds what they share (how a command is declared, connection and member
options, tokens, the connection itself); `errors.py` turns every failure into one
message and exit status; `app.py` assembles the parser. Handlers import the library
(clkhash, numpy, gRPC) only when they run, so `blindmatch --help` starts quickly.
"""

from blindmatch.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
