"""What the matcher does for its callers, one use case per module, free of gRPC.

The servicer (matcher/rpc/servicer.py) authenticates and authorises the caller, converts
the request into these functions' arguments, and converts what they return (or raise)
back; the rules live here and below.

    projects.py       create a project (its rules), rotate and revoke tokens, describe, consent
    uploads.py        receive an upload: check, write, fsync, commit (or refuse whole)
    run_requests.py   start a run, follow its progress
    runs.py           execute runs off the request threads (`match`, `RunManager`)
    results.py        a member's results: audited before anything is disclosed
    erasure.py        erase a member's data, batch and real-time
    audit_access.py   export (a member's view of) the audit log, verify the chain
    retention.py      the sweeper that expires projects
"""
