"""What a member is told of a run that did not finish (privtests2, 2026-12-07; docs/security.md
"Erasure by a member" and "Export"): no more about its partners or the operator's machines than
it needs to run again.

- A run an erasure cancelled told every member "cancelled: a member erased its data", in the
  run's status and its `run.failed` entry, which the member's audit view promises it is not
  told (a partner's erasure). Partners are now told the run must be started again; the
  operator's entry names the member that erased; the erasing member's own `erase` entry names
  the runs it cancelled.
- A run that failed on the Dask cluster told members the scheduler's and workers' addresses
  (`tls://10.0.0.5:8786`), and how many workers the operator runs: the operator's
  infrastructure. Members read only that it failed on the operator's side and to ask the
  operator (srvcarry); the operator's log and audit entry keep the words whole. Any other
  failure is read without the operator's addresses and paths.

Real matcher on loopback, real uploads; each test fails on the code before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.matcher.core.cluster import DaskExecutor, DaskSettings
from blindmatch.matcher.core.runwords import without_locations
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.retention_store import ERASED_DURING_RUN
from tests.support import ADMIN_TOKEN, Matcher, Org, encode_all

pytestmark = pytest.mark.server


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return encode_all(orgs, tmp_path)


def upload_both(matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]) -> None:
    for name, enc in encoded.items():
        with matcher.member(project.tokens[name]) as member:
            member.upload(project.project, enc)


def test_a_run_cancelled_by_an_erasure_tells_partners_to_run_again_not_who_erased(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    upload_both(matcher, project, encoded)
    run, _ = matcher.server.store.create_run("trial")  # queued, never handed to the runs
    with matcher.member(project.tokens["north"]) as north:
        north.erase("trial")
    # South, the partner: the run failed and must be started again; nothing says that a
    # member erased its data, nor which.
    with matcher.member(project.tokens["south"]) as south:
        (status,) = south.watch_run("trial", run.id)
        view = list(south.audit("trial"))
    assert status.state == "failed"
    assert "start a new run" in status.message and "cancelled" in status.message
    assert "erase" not in status.message and "north" not in status.message
    (failed,) = [e for e in view if e["action"] == "run.failed"]
    assert failed["detail"] == {"run_id": run.id, "message": status.message}
    said = json.dumps([e for e in view if e["action"] != "project.create"])  # (its members)
    assert "erase" not in said and "north" not in said, said
    # The operator's log says why; the erasing member's own entry names the run it cancelled.
    with matcher.operator() as op:
        (logged,) = [e for e in op.audit("trial") if e["action"] == "run.failed"]
    assert logged["detail"]["erased_by"] == "north"
    with matcher.member(project.tokens["north"]) as north:
        (erased,) = [e for e in north.audit("trial") if e["action"] == "erase"]
    assert erased["detail"]["runs_cancelled"] == [run.id]


# What the code before privtests2 wrote, in a cancelled run's row and its `run.failed` entry.
BEFORE = (
    "cancelled: a member erased its data while this run was queued or running, so nothing "
    "it found is stored; start a new run"
)


def test_a_run_an_erasure_cancelled_before_today_is_worded_as_today_where_members_read_it(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    """A data dir from before privtests2 holds the old words in the run's row and its hashed
    `run.failed` entry (both written by `fail_run`, as that code's erasure did). Was: status
    and audit view still told members "a member erased its data"."""
    upload_both(matcher, project, encoded)
    run, _ = matcher.server.store.create_run("trial")  # queued, never handed to the runs
    matcher.server.store.fail_run(run.id, BEFORE)
    with matcher.member(project.tokens["south"]) as south:
        (status,) = south.watch_run("trial", run.id)
        (failed,) = [e for e in south.audit("trial") if e["action"] == "run.failed"]
    assert (status.state, status.message) == ("failed", ERASED_DURING_RUN)
    assert failed["detail"] == {"run_id": run.id, "message": ERASED_DURING_RUN}
    # The operator's log is as it was written (and its chain still verifies).
    with matcher.operator() as op:
        (logged,) = [e for e in op.audit("trial") if e["action"] == "run.failed"]
        assert logged["detail"]["message"] == BEFORE


# What a member reads of a run that failed on the operator's Dask cluster (core/runwords.py).
OPERATOR_SIDE = (
    "the run failed on the operator's side (the matcher's compute cluster) and nothing of it "
    "was stored: ask the operator, whose log has the details, and start it again once they "
    "say so"
)


def test_a_run_failed_on_the_dask_cluster_tells_members_only_to_ask_the_operator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, encoded: dict[str, Encoded]
) -> None:
    """Was (srvcarry): members read the Dask cluster's own words, which name how many workers
    the operator runs ("1 of the 3 Dask workers runs another blindmatch"), or its
    scheduler. Now only that the run failed on the operator's side, and to ask the
    operator; the operator's log and audit entry keep the words whole."""
    # Nothing listens there: the run fails at once, naming the scheduler to the operator.
    gone = DaskSettings("tcp://127.0.0.1:9", "scatter", connect_timeout=0.5)
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2,
                           executor=DaskExecutor(gone))  # fmt: skip
    matcher = Matcher(server, data_dir, ADMIN_TOKEN)
    try:
        with matcher.operator() as op:
            project = op.create_project("trial", ["north", "south"])
        upload_both(matcher, project, encoded)
        with (
            caplog.at_level(logging.ERROR, "blindmatch.matcher"),
            matcher.member(project.tokens["north"]) as north,
        ):
            run = north.start_run("trial")
            final = list(north.watch_run("trial", run.run_id))[-1]
            view = list(north.audit("trial"))
        with matcher.operator() as op:
            (logged,) = [e for e in op.audit("trial") if e["action"] == "run.failed"]
    finally:
        server.stop(grace=None)
    assert (final.state, final.message) == ("failed", OPERATOR_SIDE)
    (failed,) = [e for e in view if e["action"] == "run.failed"]
    assert failed["detail"] == {"run_id": run.run_id, "message": OPERATOR_SIDE}
    # The operator's log and audit entry name it, to be fixed.
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in caplog.text
    assert logged["detail"]["cause"].startswith(
        "cannot reach the Dask scheduler at tcp://127.0.0.1:9"
    )


# What the code before srvcarry stored of a worker on another build (core/clusterbuild.py).
WORKER_BUILD_BEFORE = (
    "1 of the 3 Dask workers runs another blindmatch than the matcher (blindmatch 1.4, code "
    "1a2b, answers 3c4d): [an address on the operator's network]: blindmatch 1.3, code 9f, "
    "answers e1; their comparisons could differ; install the matcher's blindmatch (with its "
    "native kernel) on every worker (docs/operations.md#running-on-a-cluster); the run failed "
    "and nothing was stored"
)


def test_a_worker_build_failure_stored_before_tells_members_no_worker_count(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    """A data dir from before srvcarry holds the cluster's words in the run's row and its
    `run.failed` entry: members read them as today's, the operator's entry as written."""
    upload_both(matcher, project, encoded)
    run, _ = matcher.server.store.create_run("trial")  # queued, never handed to the runs
    matcher.server.store.fail_run(run.id, WORKER_BUILD_BEFORE)
    with matcher.member(project.tokens["south"]) as south:
        (status,) = south.watch_run("trial", run.id)
        (failed,) = [e for e in south.audit("trial") if e["action"] == "run.failed"]
    assert (status.state, status.message) == ("failed", OPERATOR_SIDE)
    assert failed["detail"] == {"run_id": run.id, "message": OPERATOR_SIDE}
    with matcher.operator() as op:
        (logged,) = [e for e in op.audit("trial") if e["action"] == "run.failed"]
    assert logged["detail"]["message"] == WORKER_BUILD_BEFORE


@pytest.mark.parametrize(
    ("said", "told"),
    [
        # clusterbuild.py's: a worker on another build, named by its address.
        (
            "1 of the 3 Dask workers runs another blindmatch than the matcher (blindmatch 1.4, "
            "code 1a2b, answers 3c4d): tls://10.0.0.7:40123: blindmatch 1.3, code 9f, answers "
            "e1; their comparisons could differ",
            "1 of the 3 Dask workers runs another blindmatch than the matcher (blindmatch 1.4, "
            "code 1a2b, answers 3c4d): [an address on the operator's network]: blindmatch 1.3, "
            "code 9f, answers e1; their comparisons could differ",
        ),
        (
            "the Dask worker at tcp://[fd00::7]:40123 runs another blindmatch",
            "the Dask worker at [an address on the operator's network] runs another blindmatch",
        ),
        (
            "the Dask cluster at sched.example.org:8786 has had no workers for 30 s",
            "the Dask cluster at [an address on the operator's network] has had no workers for "
            "30 s",
        ),
        (
            "lost the Dask scheduler at 10.0.0.5:8786 mid-run (CommClosedError('in "
            "<TLS (closed) ConnectionPool.gather local=tls://10.0.0.2:51234 remote="
            "tls://10.0.0.5:8786>'))",
            "lost the Dask scheduler at [an address on the operator's network] mid-run "
            "(CommClosedError('in <TLS (closed) ConnectionPool.gather local=[an address on the "
            "operator's network] remote=[an address on the operator's network]>'))",
        ),
        # S1's and S2's addresses, which the members upload to: kept where the message names
        # the role (the project resume tests read which role was unreachable, and where).
        (
            "S1 (127.0.0.1:40019) is unreachable; the Dask worker at 10.0.0.7:40123 is not",
            "S1 (127.0.0.1:40019) is unreachable; the Dask worker at [an address on the "
            "operator's network] is not",
        ),
        # Not addresses: left as they are (the paths as before).
        (
            "upload u2 of run 2026-12-07 12:30:05 (version 1.2.3): a Dask worker cannot read "
            "/srv/blindmatch/clks/u2.bin",
            "upload u2 of run 2026-12-07 12:30:05 (version 1.2.3): a Dask worker cannot read "
            "[a path on the matcher]",
        ),
    ],
    ids=["worker-build", "ipv6-worker", "hostname", "lost-scheduler", "s1", "no-address"],
)
def test_a_members_failure_message_names_no_cluster_address(said: str, told: str) -> None:
    assert without_locations(said) == told
