"""Fault injection: SIGKILL `blindmatch serve` at random moments, restart it, check nothing is lost.

    python benchmarks/faults.py --trials 200            # the full run (a few minutes)
    python benchmarks/faults.py --trials 10 --records 2000   # what `make test` runs
    python benchmarks/faults.py --trials 60 --kinds mixed    # only the mixed kind

One data dir lives through every trial. Each trial starts an operation from a
client thread - an upload (of a new re-export by one member), a run (start and
watch), a results fetch, a standing-index change, or all of these at once with
real-time queries besides (`mixed`) - and SIGKILLs the server after a random
delay drawn across that operation's usual duration, so kills land while bytes
stream in, while the upload is fsynced and committed, while chunks are
compared, while links are stored, while results stream out, while an index
change and its audit entry are written, and while queries are answered.

After each kill the server is restarted on the same port and the script checks:

- `blindmatch admin check --data-dir DIR` passes (database integrity, every
  needed CLK file present with its acknowledged size and sha256, no orphans,
  consistent runs);
- for every member, the current upload is the last one the client saw
  acknowledged, or one it sent after that without seeing the reply, and its
  stored content hashes to exactly what the client sent; nothing partial
  (record counts agree with the stored files, `tmp/` was emptied);
- the client then retries the interrupted upload with the same upload id: if the
  matcher had committed it, the retry gets the same upload id back (replayed)
  and nothing new is stored;
- an interrupted run finishes on its own after the restart (nobody calls
  StartRun again), and every member's results equal the known truth of the
  uploads that run used;
- nothing was disclosed or changed unaudited: every query and results fetch the
  client saw answered (each with a purpose of its own) has its entry in the
  audit log, and every index change stored has a `index.change` entry that no
  `index.change.void` withdrew (and every such entry's change is stored); an
  interrupted index change sent again with the same change id is acknowledged
  as it was if it had been stored.

Prints a summary: trials, acknowledged items, items lost, corruptions, unaudited
disclosures; the exit status is non-zero unless the last three are 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import random
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.knownclks import (  # noqa: E402
    CLK_BITS,
    FINGERPRINT,
    Dataset,
    expected_hits,
    hits_of,
    population,
    write,
)
from benchmarks.ports import PORT_TRIES, PortTaken, said_taken  # noqa: E402
from benchmarks.workdir import add_keep, work_dir  # noqa: E402
from blindmatch.cli import main as cli_main  # noqa: E402
from blindmatch.client import MatcherClient  # noqa: E402
from blindmatch.client.errors import BlindmatchError  # noqa: E402
from blindmatch.client.remote.retry import NO_RETRY, RetryPolicy  # noqa: E402

PROJECT = "faults"
PATIENT = RetryPolicy(attempts=12, initial_delay=0.05, max_delay=1.0)
KINDS = ("upload", "run", "results", "index", "mixed")
QUERY_THREADS = 2  # members querying partners' standing indexes during a mixed trial


class Server:
    """`blindmatch serve` as a child process on loopback. Port 0: `serve` listens
    on a port the kernel picks, read from its listening line, so no other process can take it
    first; a restart after `kill`/`stop` comes back on the same port."""

    def __init__(self, data_dir: Path, port: int, admin_token: str, workers: int = 2) -> None:
        self.data_dir, self.port, self.admin_token, self.workers = (
            data_dir,
            port,
            admin_token,
            workers,
        )
        self.process: subprocess.Popen[str] | None = None
        self.drain: threading.Thread | None = None
        self.log = data_dir.parent / "serve.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start `serve` and wait for its listening line; `port` and `target` then name the port
        it listens on. A port another process took since it was picked (given by the caller, or
        this server's own in the gap between a kill and the restart; a parallel suite's clients
        draw local ports from the same range) is refused by `serve` (no SO_REUSEPORT): it then
        listens on port 0, a port the kernel picks, up to PORT_TRIES times."""
        for _ in range(PORT_TRIES - 1):
            try:
                return self._start()
            except PortTaken:
                self.port = 0
        return self._start()

    def _start(self) -> None:
        log = open(self.log, "a")  # noqa: SIM115 - handed to the child process
        cmd = [
            sys.executable,
            "-m",
            "blindmatch",
            "serve",
            "--data-dir",
            str(self.data_dir),
        ]
        cmd += ["--listen", self.target, "--workers", str(self.workers)]
        self.process = subprocess.Popen(
            cmd,
            stderr=subprocess.PIPE,
            stdout=log,
            text=True,
            cwd=ROOT,
            env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": self.admin_token},
        )
        assert self.process.stderr is not None
        deadline, taken = time.monotonic() + 60, False
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                log.close()
                self.process.stderr.close()
                if self.process.returncode == 2 and taken:
                    raise PortTaken(self.target)
                raise RuntimeError(f"blindmatch serve exited {self.process.returncode}")
            taken = taken or said_taken(line)
            log.write(line)
            listening = re.search(r"listening on [\d.]+:(\d+)", line)
            if listening:
                self.port = int(listening[1])  # the one the kernel picked, for port 0
                break
        else:
            self.kill()
            raise RuntimeError("blindmatch serve did not start within 60s")
        # Keep draining its log so the child never blocks on a full pipe.
        self.drain = threading.Thread(target=self._drain, args=(self.process, log), daemon=True)
        self.drain.start()

    @staticmethod
    def _drain(process: subprocess.Popen[str], log: io.TextIOBase) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.write(line)
        process.stderr.close()
        log.close()

    def kill(self) -> None:
        """SIGKILL: no chance to flush, clean up or finish anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=30)
        if self.drain is not None:
            self.drain.join(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.drain is not None:
            self.drain.join(timeout=30)


@dataclass
class Ledger:
    """What the client knows: what it sent, and what was acknowledged."""

    content: dict[str, Dataset] = field(default_factory=dict)  # sha256 -> what was sent
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # member -> (sha, upload id)
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # member -> {key: sha}
    acked_runs: set[str] = field(default_factory=set)
    # Standing indexes: member -> {ref: CLK} acknowledged, and the state an
    # unacknowledged change would leave (it must be all there or not at all).
    index: dict[str, dict[str, bytes]] = field(default_factory=dict)
    index_pending: dict[str, dict[str, bytes]] = field(default_factory=dict)
    # The change in flight, to send again after a restart: (change id, puts, removes).
    index_change: dict[str, tuple[str, list[tuple[str, bytes]], list[str]]] = field(
        default_factory=dict
    )
    # Purposes of the queries and results fetches the client saw answered, by action.
    answered: dict[str, str] = field(default_factory=dict)


@dataclass
class Summary:
    trials: int = 0
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    killed_mid_operation: int = 0
    acknowledged_uploads: int = 0
    acknowledged_runs: int = 0
    acknowledged_index_changes: int = 0
    answered_queries: int = 0
    disclosures_checked: int = 0
    index_changes_checked: int = 0
    results_verified: int = 0
    replayed_retries: int = 0
    runs_resumed: int = 0
    lost: list[str] = field(default_factory=list)
    corruptions: list[str] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.corruptions and not self.unaudited

    def render(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in self.kills.items())
        lines = [
            f"trials run:            {self.trials} ({kinds}); "
            f"{self.killed_mid_operation} killed before the operation answered",
            f"acknowledged items:    {self.acknowledged_uploads} uploads, "
            f"{self.acknowledged_runs} runs, {self.acknowledged_index_changes} index changes; "
            f"{self.results_verified} results fetches verified",
            f"answered queries:      {self.answered_queries}",
            f"retries replayed:      {self.replayed_retries} (committed before the kill, "
            "acknowledged again, not stored twice)",
            f"runs resumed:          {self.runs_resumed} (finished on their own after a restart)",
            f"items lost:            {len(self.lost)}",
            f"corruptions found:     {len(self.corruptions)}",
            f"unaudited disclosures: {len(self.unaudited)} (of {self.disclosures_checked} "
            f"answered queries and results fetches, and {self.index_changes_checked} stored "
            "index changes, checked against the audit log)",
            f"time:                  {self.seconds:.0f}s",
        ]
        lines += [f"  LOST: {x}" for x in self.lost[:20]]
        lines += [f"  CORRUPT: {x}" for x in self.corruptions[:20]]
        lines += [f"  UNAUDITED: {x}" for x in self.unaudited[:20]]
        return "\n".join(lines)


class Trials:
    def __init__(
        self, workdir: Path, *, members: int, records: int, seed: int, log: Callable[[str], None]
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.nprng = __import__("numpy").random.default_rng(seed)
        self.members = [f"m{i}" for i in range(members)]
        self.base = dict(zip(self.members, population(members, records, 0.3, seed), strict=True))
        self.log = log
        self.server = Server(workdir / "data", 0, "bm_admin_" + secrets.token_hex(8))
        self.ledger = Ledger()
        self.summary = Summary()
        self.tokens: dict[str, str] = {}
        # Typical durations, learnt as we go, so kill delays span each operation.
        self.duration = {"upload": 0.2, "run": 1.0, "results": 0.1, "index": 0.1, "mixed": 1.0}
        self.kinds: tuple[str, ...] = KINDS

    # -- clients -------------------------------------------------------------------------

    def client(self, member: str, *, retry: RetryPolicy = PATIENT) -> MatcherClient:
        return MatcherClient(self.server.target, self.tokens[member], retry=retry)

    def setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server.start()
        with MatcherClient(self.server.target, self.server.admin_token) as op:
            self.tokens = op.create_project(PROJECT, self.members).tokens
        for m in self.members:  # every member uploads once, so runs can start
            self.upload(m, self.base[m], key=uuid.uuid4().hex, retry=PATIENT)
        if "mixed" in self.kinds:  # partners' standing indexes for the queries to search
            for m in self.members:
                self._change_index(m, PATIENT)

    def upload(self, member: str, ds: Dataset, *, key: str, retry: RetryPolicy) -> None:
        sha = ds.sha256
        self.ledger.content[sha] = ds
        self.ledger.pending.setdefault(member, {})[key] = sha
        path = self.workdir / "encoded" / f"{member}-{sha[:12]}"
        encoded = write(ds, path) if not path.exists() else None
        from blindmatch.client.encoding.encoded import read_encoded

        encoded = encoded or read_encoded(path, verify=False)
        with self.client(member, retry=retry) as c:
            reply = c.upload(PROJECT, encoded, upload_id=key)
        if reply.sha256 != sha or reply.record_count != len(ds.subjects):
            self.summary.corruptions.append(
                f"{member}: upload {key} acknowledged as {reply.sha256[:12]} "
                f"x{reply.record_count}, sent {sha[:12]} x{len(ds.subjects)}"
            )
        if reply.replayed:
            self.summary.replayed_retries += 1
        self.ledger.acked[member] = (sha, reply.upload_id)
        self.ledger.pending[member] = {}
        self.summary.acknowledged_uploads += 1

    # -- one trial ------------------------------------------------------------------------

    def trial(self) -> None:
        kind = self.rng.choice(self.kinds)
        self.summary.kills[kind] += 1
        outcome: dict[str, object] = {}
        op = {
            "upload": self._op_upload,
            "run": self._op_run,
            "results": self._op_results,
            "index": self._op_index,
            "mixed": self._op_mixed,
        }[kind]
        thread = threading.Thread(target=self._guard, args=(op, outcome), daemon=True)
        thread.start()
        time.sleep(self.rng.uniform(0, 1.3 * self.duration[kind]))
        self.server.kill()
        thread.join(timeout=60)
        if outcome.get("done"):
            # It finished before the kill: learn how long such an operation takes.
            self.duration[kind] = 0.7 * self.duration[kind] + 0.3 * (
                float(outcome["elapsed"]) + 0.01  # type: ignore[arg-type]
            )
        else:
            self.summary.killed_mid_operation += 1
        self.server.start()
        self.verify_after_restart()
        self.summary.trials += 1

    def _guard(self, op: Callable[[dict[str, object]], None], outcome: dict[str, object]) -> None:
        t0 = time.monotonic()
        try:
            op(outcome)
            outcome["done"] = True
        except BlindmatchError as exc:  # the kill cut it off: expected
            outcome["error"] = str(exc)
        outcome["elapsed"] = time.monotonic() - t0

    def _op_upload(self, outcome: dict[str, object]) -> None:
        member = self.rng.choice(self.members)
        ds = self.base[member].variant(self.nprng)
        self.upload(member, ds, key=uuid.uuid4().hex, retry=NO_RETRY)

    def _op_run(self, outcome: dict[str, object]) -> None:
        member = self.rng.choice(self.members)
        with self.client(member, retry=NO_RETRY) as c:
            started = c.start_run(PROJECT)
            self.ledger.acked_runs.add(started.run_id)
            self.summary.acknowledged_runs += 1
            for _ in c.watch_run(PROJECT, started.run_id):
                pass

    def _op_results(self, outcome: dict[str, object]) -> None:
        member = self.rng.choice(self.members)
        purpose = f"results-{uuid.uuid4().hex[:12]}"
        with self.client(member, retry=NO_RETRY) as c:
            c.results(PROJECT, purpose=purpose)
        self.ledger.answered[purpose] = "results.disclose"

    def _op_index(self, outcome: dict[str, object]) -> None:
        self._change_index(self.rng.choice(self.members), NO_RETRY)

    def _change_index(self, member: str, retry: RetryPolicy) -> None:
        """One atomic standing-index change: a few thousand puts (new and replaced) and removes."""
        current = self.ledger.index.get(member, {})
        rows = self.base[member].clks
        picks = self.nprng.integers(0, len(rows), size=self.rng.randint(500, 4000))
        puts = [(f"r{int(i)}", rows[int(i)].tobytes()) for i in picks]
        puts = list(dict(puts).items())  # one put per ref
        removes = [r for r in current if self.rng.random() < 0.05 and r not in dict(puts)]
        after = {r: c for r, c in current.items() if r not in removes}
        after.update(puts)
        key = uuid.uuid4().hex
        self.ledger.index_pending[member] = after
        self.ledger.index_change[member] = (key, puts, removes)
        with self.client(member, retry=retry) as c:
            summary = c.change_index(
                PROJECT, clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts, removes=removes,
                change_id=key,
            )  # fmt: skip
        if summary.record_count != len(after):
            self.summary.corruptions.append(
                f"{member}: index change acknowledged {summary.record_count} records, "
                f"expected {len(after)}"
            )
        self.ledger.index[member] = after
        self.ledger.index_pending.pop(member, None)
        self.ledger.index_change.pop(member, None)
        self.summary.acknowledged_index_changes += 1

    def _op_mixed(self, outcome: dict[str, object]) -> None:
        """Everything at once: an upload, an index change, a run, a results fetch, and
        members querying partners' standing indexes until the kill."""
        uploader, changer = self.rng.sample(self.members, 2)
        ds = self.base[uploader].variant(self.nprng)
        key = uuid.uuid4().hex
        parts: list[Callable[[], None]] = [
            lambda: self.upload(uploader, ds, key=key, retry=NO_RETRY),
            lambda: self._change_index(changer, NO_RETRY),
            lambda: self._op_run(outcome),
            lambda: self._op_results(outcome),
        ]
        stop = threading.Event()
        parts += [
            functools.partial(self._query_until_killed, m, stop)
            for m in self.rng.sample(self.members, QUERY_THREADS)
        ]
        errors: list[BlindmatchError] = []

        def guarded(part: Callable[[], None]) -> None:
            try:
                part()
            except BlindmatchError as exc:  # the kill cut it off: expected
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(p,), daemon=True) for p in parts]
        for thread in threads[:4]:
            thread.start()
        for thread in threads[4:]:
            thread.start()
        for thread in threads[:4]:
            thread.join(timeout=120)
        stop.set()  # the other operations finished before any kill: stop asking too
        for thread in threads[4:]:
            thread.join(timeout=120)
        if errors:
            raise errors[0]

    def _query_until_killed(self, member: str, stop: threading.Event) -> None:
        rows = self.base[member].clks
        with self.client(member, retry=NO_RETRY) as c:
            for i in range(100_000):
                if stop.is_set():
                    return
                purpose = f"query-{uuid.uuid4().hex[:12]}"
                c.query(
                    PROJECT, rows[i % len(rows)].tobytes(), clk_bits=CLK_BITS,
                    fingerprint=FINGERPRINT, purpose=purpose,
                )  # fmt: skip
                self.ledger.answered[purpose] = "query"
                self.summary.answered_queries += 1

    # -- checks after a restart -------------------------------------------------------------

    def db_rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.server.data_dir / 'blindmatch.sqlite'}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def admin_check(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(["admin", "check", "--data-dir", str(self.server.data_dir), "--json"])
        report = json.loads(out.getvalue())
        if code != 0:
            self.summary.corruptions += [
                f"trial {self.summary.trials}: admin check: {p}" for p in report["problems"]
            ]

    def verify_after_restart(self) -> None:
        t = self.summary.trials
        self.admin_check()
        leftovers = list((self.server.data_dir / "tmp").iterdir())
        if leftovers:
            self.summary.corruptions.append(f"trial {t}: tmp/ not emptied: {leftovers}")
        current = {
            member: (uid, sha, count)
            for uid, member, sha, count in self.db_rows(
                "SELECT id, member, sha256, record_count FROM uploads "
                "WHERE project=? AND current=1",
                (PROJECT,),
            )
        }
        with self.client(self.members[0]) as c:
            shown = {m.name: m.record_count for m in c.describe(PROJECT).members}
        for member in self.members:
            self._verify_member(t, member, current.get(member), shown.get(member))
            self._verify_index(t, member)
        self._verify_audit(t)
        self._verify_runs(t)

    def _verify_audit(self, t: int) -> None:
        """Every answered query and results fetch, and every stored index change, has its
        audit entry; no entry claims an index change that was never stored."""
        entries = [
            (seq, action, purpose, json.loads(detail))
            for seq, action, purpose, detail in self.db_rows(
                "SELECT seq, action, purpose, detail FROM audit WHERE project=?", (PROJECT,)
            )
        ]
        audited = {(action, purpose) for _, action, purpose, _ in entries}
        for purpose, action in self.ledger.answered.items():
            self.summary.disclosures_checked += 1
            if (action, purpose) not in audited:
                self.summary.unaudited.append(
                    f"trial {t}: {action} {purpose!r} was answered but has no audit entry"
                )
        self.ledger.answered.clear()
        voided = {d["announced"] for _, a, _, d in entries if a == "index.change.void"}
        claimed = {
            (d.get("change_id"), seq) for seq, a, _, d in entries
            if a == "index.change" and seq not in voided
        }  # fmt: skip
        db = sqlite3.connect(f"file:{self.server.data_dir / 'index.sqlite'}?mode=ro", uri=True)
        try:
            stored = set(
                db.execute(
                    "SELECT change_id, audit_seq FROM index_changes WHERE project=?", (PROJECT,)
                ).fetchall()
            )
        finally:
            db.close()
        for change_id, seq in stored - claimed:
            self.summary.unaudited.append(
                f"trial {t}: index change {change_id} is stored without its audit entry {seq}"
            )
        for change_id, seq in claimed - stored:
            self.summary.corruptions.append(
                f"trial {t}: audit entry {seq} claims index change {change_id}, never stored"
            )
        self.summary.index_changes_checked = len(stored)

    def _verify_index(self, t: int, member: str) -> None:
        """The stored index is the acknowledged one, or (all of) the one in flight."""
        path = self.server.data_dir / "index.sqlite"
        stored: dict[str, bytes] = {}
        if path.exists():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                stored = dict(
                    db.execute(
                        "SELECT ref, clk FROM index_records WHERE project=? AND member=?",
                        (PROJECT, member),
                    ).fetchall()
                )
            finally:
                db.close()
        acked = self.ledger.index.get(member, {})
        pending = self.ledger.index_pending.pop(member, None)
        change = self.ledger.index_change.pop(member, None)
        if stored != acked:
            if pending is not None and stored == pending:
                self.ledger.index[member] = pending  # committed just before the kill
                if change is not None:
                    self._resend_change(t, member, change, len(pending))
            else:
                missing = len(set(acked) - set(stored))
                self.summary.lost.append(
                    f"trial {t}: {member}'s standing index has {len(stored)} records, neither "
                    f"the acknowledged {len(acked)} ({missing} missing) nor the change in flight"
                )
        if stored:
            with self.client(member) as c:  # what the matcher serves must agree with its disk
                if set(c.list_index(PROJECT)) != set(stored):
                    self.summary.corruptions.append(
                        f"trial {t}: {member}: the index in memory differs from the one on disk"
                    )

    def _resend_change(
        self, t: int, member: str, change: tuple[str, list[tuple[str, bytes]], list[str]], n: int
    ) -> None:
        """The client sends the interrupted change again, with its id: it was stored, so
        it is acknowledged as it was and changes nothing."""
        key, puts, removes = change
        with self.client(member) as c:
            again = c.change_index(
                PROJECT, clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts, removes=removes,
                change_id=key,
            )  # fmt: skip
        if again.replayed and again.record_count == n:
            self.summary.replayed_retries += 1
        else:
            self.summary.corruptions.append(
                f"trial {t}: {member}: index change {key} sent again was not acknowledged as "
                f"stored (replayed {again.replayed}, {again.record_count} records, expected {n})"
            )

    def _verify_member(
        self, t: int, member: str, current: tuple[str, str, int] | None, shown: int | None
    ) -> None:
        acked_sha, acked_id = self.ledger.acked[member]
        pending = self.ledger.pending.get(member, {})
        if current is None:
            self.summary.lost.append(f"trial {t}: {member} has no current upload")
            return
        uid, sha, count = current
        if sha != acked_sha and sha not in pending.values():
            self.summary.lost.append(
                f"trial {t}: {member}'s current upload {sha[:12]} is neither its acknowledged "
                f"one {acked_sha[:12]} nor one it sent since"
            )
            return
        if sha == acked_sha and uid != acked_id and sha not in pending.values():
            self.summary.corruptions.append(f"trial {t}: {member}: upload id changed")
        sent = self.ledger.content[sha]
        stored = (self.server.data_dir / "clks" / f"{uid}.bin").read_bytes()
        if stored != sent.clks.tobytes():
            self.summary.corruptions.append(
                f"trial {t}: {member}: stored bytes differ from what was sent"
            )
        if count != len(sent.subjects) or shown != count:
            self.summary.corruptions.append(
                f"trial {t}: {member}: record count {count} (shown {shown}), "
                f"sent {len(sent.subjects)}"
            )
        # Finish what the kill interrupted, as the client's retry would.
        for key, psha in list(pending.items()):
            rows_before = self.db_rows("SELECT COUNT(*) FROM uploads")[0][0]
            committed = psha == sha
            self.upload(member, self.ledger.content[psha], key=key, retry=PATIENT)
            rows_after = self.db_rows("SELECT COUNT(*) FROM uploads")[0][0]
            if committed and (rows_after != rows_before or self.ledger.acked[member][1] != uid):
                self.summary.corruptions.append(
                    f"trial {t}: {member}: retrying committed upload {key} stored it again"
                )

    def _verify_runs(self, t: int) -> None:
        rows = self.db_rows(
            "SELECT id, state FROM runs WHERE project=? ORDER BY seq DESC LIMIT 1", (PROJECT,)
        )
        if not rows:
            return
        run_id, state = rows[0]
        for acked in self.ledger.acked_runs:
            if not self.db_rows("SELECT 1 FROM runs WHERE id=?", (acked,)):
                self.summary.lost.append(f"trial {t}: acknowledged run {acked} is gone")
        self.ledger.acked_runs.clear()
        if state in ("queued", "running"):
            with self.client(self.members[0]) as c:  # watch only: it must finish on its own
                final = list(c.watch_run(PROJECT, run_id))[-1]
            if final.state != "done":
                self.summary.lost.append(f"trial {t}: run {run_id} ended {final.state}")
                return
            self.summary.runs_resumed += 1
        inputs = self.db_rows(
            "SELECT ri.member, u.sha256 FROM run_inputs ri JOIN uploads u ON u.id=ri.upload_id "
            "WHERE ri.run_id=?",
            (run_id,),
        )
        state = self.db_rows("SELECT state FROM runs WHERE id=?", (run_id,))[0][0]
        if state != "done":
            self.summary.corruptions.append(f"trial {t}: run {run_id} is {state} after a restart")
            return
        truth = expected_hits({m: self.ledger.content[sha] for m, sha in inputs})
        for member in self.members:
            with self.client(member) as c:
                results = c.results(PROJECT)
            self.summary.results_verified += 1
            if results.run_id != run_id or hits_of(results.hits) != truth[member]:
                self.summary.corruptions.append(
                    f"trial {t}: {member}'s results for {results.run_id} differ from the truth"
                )


def run_trials(
    trials: int,
    workdir: Path,
    *,
    members: int = 3,
    records: int = 8000,
    seed: int = 7,
    log: Callable[[str], None] = lambda s: None,
    kinds: tuple[str, ...] = KINDS,
) -> Summary:
    """Run `trials` kill-and-restart trials in `workdir` (of `kinds`); returns the summary."""
    t0 = time.monotonic()
    runner = Trials(workdir, members=members, records=records, seed=seed, log=log)
    runner.kinds = kinds
    runner.summary.kills = dict.fromkeys(kinds, 0)
    try:
        runner.setup()
        for i in range(trials):
            runner.trial()
            if (i + 1) % 10 == 0:
                s = runner.summary
                log(
                    f"  {i + 1}/{trials} trials: {s.acknowledged_uploads} uploads acknowledged, "
                    f"{len(s.lost)} lost, {len(s.corruptions)} corruptions, "
                    f"{len(s.unaudited)} unaudited"
                )
    finally:
        runner.server.stop()
    runner.summary.seconds = time.monotonic() - t0
    return runner.summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--records", type=int, default=8000, help="CLKs per member upload")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"trial kinds to draw from (default: {','.join(KINDS)})",
    )
    parser.add_argument("--workdir", type=Path, help="default: a new temporary folder")
    add_keep(parser)
    args = parser.parse_args()
    # A --workdir given is the user's (kept); a temporary one is deleted at the end.
    given = contextlib.nullcontext(args.workdir) if args.workdir else None
    with given or work_dir("blindmatch-faults-", keep=args.keep) as workdir:
        return bench(args, workdir)


def bench(args: argparse.Namespace, workdir: Path) -> int:
    """The benchmark with its files in `workdir`."""
    print(f"fault injection: {args.trials} trials, data in {workdir}")
    summary = run_trials(
        args.trials,
        workdir,
        members=args.members,
        records=args.records,
        seed=args.seed,
        log=print,
        kinds=tuple(k for k in args.kinds.split(",") if k in KINDS),
    )
    print(summary.render())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
