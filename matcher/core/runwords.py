"""What a member is told of a run that did not finish: `for_members`, the one place that decides.

A run that failed on the matcher's Dask cluster (a `ClusterError`: a worker on another
build, the scheduler unreachable or lost) is the operator's to fix: members read only
`OPERATOR_SIDE`, that it failed on the operator's side and to ask the operator; the operator's
log and the `cause` of its `run.failed` audit entry keep the message whole (how many workers,
their addresses and builds). Any other failure, and a run's start refused (S1 or S2
unreachable), is read with the matcher's paths and its network's addresses replaced by what
they are (`without_locations`); S1's and S2's addresses, which the members upload to, stay
where the message names the role.

Since privtests2 a run an erasure cancelled fails with `ERASED_DURING_RUN` (its status and
its `run.failed` entry): that the project's uploads changed and it must run again, not that
a partner erased its data (the operator's entry keeps who: `erased_by`). Runs cancelled, and
`run.failed` entries logged, before then still hold the old message, "cancelled: a member
erased its data ..."; `for_members` words such a message as today's code does wherever
a member reads it (a run's status, the member's audit view). The stored row and the hashed
audit entry are left as they are: the operator's log still says what was written.
"""

from __future__ import annotations

import re

ERASED_DURING_RUN = (
    "cancelled: the project's uploads changed while this run was queued or running, so "
    "nothing it found is stored; start a new run"
)
# The message before privtests2 (matcher/storage/retention_store.py, 8e1d3781 to 4fa2f2ab).
ERASED_BEFORE = "cancelled: a member erased its data"


# What members read of a run that failed on the Dask cluster (the operator's log has why).
OPERATOR_SIDE = (
    "the run failed on the operator's side (the matcher's compute cluster) and nothing of it "
    "was stored: ask the operator, whose log has the details, and start it again once they "
    "say so"
)
# A run's failure stored whole before srvcarry (2026-12-08): the Dask cluster's own words
# (core/cluster.py, core/clusterbuild.py), which told members how many workers the operator
# runs; read as `OPERATOR_SIDE`.
_CLUSTER_BEFORE = re.compile(
    r"\bDask (?:workers?|scheduler|cluster)\b|\bthe workers can(?:not)? |scattered CLKs"
)

# A URL of a file (file://, s3://, ...); not a Dask address (tcp://, tls://, ...: _ADDRESS).
_URL = re.compile(
    r"\b(?!(?:tcp|tls|ws|wss|inproc|ucx)://)[a-z][a-z0-9+.-]*://[^\s'\"),;]+", re.IGNORECASE
)
_PATH = re.compile(r"(?<![\w.~:/-])(?:~|\.{1,2})?/[^\s'\"),;:]+")
# A Dask scheduler's or worker's address, or another host's (tls://10.0.0.5:8786,
# tcp://[::1]:40123, a bare 10.0.0.5:8786, sched.example.org:8786, localhost:8786): the
# operator's infrastructure, not a member's to learn (privtests2; its log names them).
_ADDRESS = re.compile(
    r"\b(?:tcp|tls|ws|wss|inproc|ucx)://[\w.%\[\]:-]*[\w\]]"
    r"|\[[0-9a-f.]*:[0-9a-f:.]*\](?::\d+)?"
    r"|(?<![\w.:-])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.-])"
    r"|(?<![\w.:-])(?:localhost|[a-z][\w-]*(?:\.[a-z0-9][\w-]*)+):\d{1,5}\b",
    re.IGNORECASE,
)


# S1's and S2's own addresses, which a two-server project's members upload to themselves:
# kept where a failure names the role ("S1 (127.0.0.1:40019) is unreachable").
_ROLE_BEFORE = ("S1 (", "S2 (")


def _hidden(address: re.Match[str]) -> str:
    if address.string[max(0, address.start() - 4) : address.start()] in _ROLE_BEFORE:
        return address[0]
    return "[an address on the operator's network]"


def without_locations(message: str) -> str:
    """A failure's message without the operator's machines: the matcher's file paths and
    URLs (a data dir, a worker's file://...) and its Dask cluster's addresses replaced by what
    they are (the operator's log keeps the message whole); S1's and S2's addresses, which
    the members upload to, are kept where the message names the role."""
    message = _ADDRESS.sub(_hidden, message)
    return _PATH.sub("[a path on the matcher]", _URL.sub("[a location on the matcher]", message))


def for_members(message: str) -> str:
    """`message`, a run's failure or a run's start refused, as a member reads it: an
    erasure's cancellation in today's words, the Dask cluster's failure as `OPERATOR_SIDE`,
    anything else without the operator's paths and addresses (`without_locations`)."""
    if message.startswith(ERASED_BEFORE):
        return ERASED_DURING_RUN
    if _CLUSTER_BEFORE.search(message):
        return OPERATOR_SIDE
    return without_locations(message)


def detail_as_read(key: str, value: object) -> object:
    """An audit entry's detail value as a member reads it (`message` reworded)."""
    return for_members(value) if key == "message" and isinstance(value, str) else value
