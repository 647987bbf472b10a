"""What the tests share besides fixtures (those are in conftest.py): the paths and inputs
they use, a running matcher's handle, and helpers to encode, upload, query and inspect what
the matcher keeps. Test modules import from here, never from one another."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks.ports import free_port as free_port
from benchmarks.synthclks import CLK_BITS
from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encode import encode_csv, read_secret, save_encoded
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.person import encode_person
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.encoding.sharing import SharedUpload
from blindmatch.client.remote.index import sync_index
from blindmatch.matcher.core import twoserver
from blindmatch.matcher.core.index import MemberIndex, as_words
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.portheld import dead_port as dead_port
from tests.portheld import port_held as port_held

ROOT = Path(__file__).resolve().parent.parent
# The default: record-level CLK plus a fallback CLK without the date of birth (issue 21).
PERSON_SCHEMA = ROOT / "schemas" / "person-uk.json"
# The default has the fallback CLK; tests that are about the fallback say so by this name.
FALLBACK_SCHEMA = PERSON_SCHEMA
# Opt-in: the default's layout with one record-level CLK per record, no fallback CLK.
NO_FALLBACK_SCHEMA = ROOT / "schemas" / "person-uk-no-fallback.json"
# Opt-in: the layout that was the default until issue 21 (dob in positional unigrams, no
# swap-tolerant names feature), with its fallback CLK.
ORIGINAL_SCHEMA = ROOT / "schemas" / "person-uk-original.json"
ORIGINAL_NO_FALLBACK_SCHEMA = ROOT / "schemas" / "person-uk-original-no-fallback.json"
# Opt-in: field-level filters scored with Fellegi-Sunter; leaks value frequencies.
FIELD_LEVEL_SCHEMA = ROOT / "schemas" / "person-uk-field-level.json"
FEBRL4 = ROOT / "tests" / "data" / "febrl4"

ADMIN_TOKEN = "bm_admin_test_" + secrets.token_hex(8)
# `create_server(retry_waits=...)` for tests that wait on a background retry (an erasure
# finished part-way, usecases/erasure_retry.py; S1's or S2's start-up Forget,
# realtime/twoforget.py): the same tries, 0.05 s, 0.1 s, then every 0.2 s apart, not the
# production 1, 2, 5, 10, 30 s, then every minute.
QUICK_RETRIES = (0.05, 0.1, 0.2)

# A secret that passes `encode`'s strength rule (client.encoding.sharedsecret), fixed so runs
# repeat.
STRONG_SECRET = "5f0c9e2a7b41d8e36a9c04b7f21e8d5390ab6c7e4f1d2a8b9c3e6f70a1b2c3d4"


@dataclass
class Matcher:
    """A running matcher: where it listens, its data dir, and the operator token."""

    server: RunningServer
    data_dir: Path
    admin_token: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def operator(self) -> MatcherClient:
        return MatcherClient(self.target, self.admin_token)

    def member(self, token: str) -> MatcherClient:
        return MatcherClient(self.target, token)


# -- two members' small exports, written in different conventions -----------------------


NORTH_CSV = """URN,Forenames,Surname,DOB,Sex,Postcode
N1,Élodie,O'Brien,02/03/1985,F,SW1A 1AA
N2,James,Smith,17/11/1990,M,M1 2AB
N3,Aoife,Byrne,30/02/1970,F,LS6 3DR
N4,Zoltán,Kovács,05/05/1965,M,CF10 1AA
N5,Grace,Hughes,12/12/2001,F,EH1 9ZZ
"""

SOUTH_CSV = """PersonID,FIRST_NAME,LAST_NAME,BIRTH_DATE,GENDER,POST_CODE
S-10,ELODIE,OBRIEN,1985-03-02,Female,sw1a1aa
S-11,ZOLTAN,KOVACS,1965-05-05,Male,cf101aa
S-12,PETER,NOWAK,1979-08-14,Male,b338tt
S-13,GRACE,HUGHES,2001-12-12,Female,eh19zz
"""

NORTH_MAP = """id = "URN"
[fields]
given_name = "Forenames"
surname = "Surname"
dob = { column = "DOB", date_format = "%d/%m/%Y" }
sex = "Sex"
postcode = "Postcode"
"""

SOUTH_MAP = """id = "PersonID"
[fields]
given_name = "FIRST_NAME"
surname = "LAST_NAME"
dob = { column = "BIRTH_DATE", date_format = "%Y-%m-%d" }
sex = "GENDER"
postcode = "POST_CODE"
"""


@dataclass
class Org:
    csv: Path
    mapping: Path


# -- encoding, uploading, running ----------------------------------------------------------


def encode(org: Org, out: Path, secret: bytes = b"shared secret") -> Encoded:
    schema = load_schema(PERSON_SCHEMA)
    result = encode_csv(org.csv, schema, load_mapping(org.mapping, schema), secret)
    return save_encoded(out, result, schema, secret)


def encode_all(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}


@pytest.fixture
def orgs_encoded(orgs: dict[str, Org], secret_file: Path, tmp_path: Path) -> dict[str, Encoded]:
    """The fixture `orgs`, each encoded with `secret_file`'s secret (a module takes it as its
    `encoded`: `encoded = orgs_encoded`)."""
    secret = read_secret(secret_file)
    return {n: encode(o, tmp_path / f"{n}.encoded", secret) for n, o in orgs.items()}


def uploaded_and_run(matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]) -> None:
    for name, enc in encoded.items():
        with matcher.member(project.tokens[name]) as member:
            member.upload(project.project, enc)
    with matcher.member(project.tokens["north"]) as member:
        run = member.start_run(project.project)
        assert [s.state for s in member.watch_run(project.project, run.run_id)][-1] == "done"


def encode_cli(org: Org, secret: Path, out: Path, schema: Path = PERSON_SCHEMA) -> int:
    return main(
        [
            "encode",
            str(org.csv),
            "--schema",
            str(schema),
            "--secret-file",
            str(secret),
            "--mapping",
            str(org.mapping),
            "--out",
            str(out),
        ]
    )


def assert_refused(
    capsys: pytest.CaptureFixture[str], code: int, out: Path, *fragments: str
) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("Error: ")
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


# -- real time: a standing index and questions ---------------------------------------------


KEY = b"north's own ref key, never shared"
PURPOSE = "case 2024/117"
GRACE = {"given_name": "Grace", "surname": "Hughes", "dob": "2001-12-12", "sex": "F"}
PETER = {"given_name": "Peter", "surname": "Nowak", "dob": "1979-08-14"}


def person(secret_file: Path, **values: str) -> tuple[bytes, int, bytes]:
    """One person's CLK, encoded as `blindmatch query` encodes it."""
    result = encode_person(load_schema(PERSON_SCHEMA), read_secret(secret_file), values)
    return result.clks, result.clk_bits, result.fingerprint


def index_all(client: MatcherClient, project: str, encoded: Encoded) -> None:
    sync_index(client, project, encoded, KEY)


def ask(client: MatcherClient, project: str, clk: tuple[bytes, int, bytes]) -> list[str]:
    """The partners said to hold the one queried person."""
    answer = client.query(project, clk[0], clk_bits=clk[1], fingerprint=clk[2], purpose=PURPOSE)
    return [m.partner for m in answer.results[0]]


def first_notification(
    matcher: Matcher,
    token: str,
    project: str,
    clk: tuple[bytes, int, bytes],
    then: Callable[[], None],
) -> list[object]:
    """Watch for `clk` as `token`, run `then` once the matcher holds the watch, and return
    what the watch was told (its first notification, or nothing within 30 s)."""
    told: list[object] = []
    watching = threading.Event()

    def watch() -> None:
        with matcher.member(token) as member:
            stream = member.watch(
                project, clk[0], clk_bits=clk[1], fingerprint=clk[2], purpose=PURPOSE,
                timeout=30,
            )  # fmt: skip
            watching.set()
            told.append(next(stream))
            stream.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    watching.wait(10)
    for _ in range(100):
        if len(matcher.server.realtime.watches):
            break
        time.sleep(0.05)
    then()
    watcher.join(30)
    return told


def partner_indexes(clks: np.ndarray, starts: dict[str, int], size: int) -> dict[str, MemberIndex]:
    """Partners' indexes (threshold 0.8) of `size` rows of `clks` each, from their starts
    (overlapping, so several partners hold some people), refs named for the partner."""
    return {
        name: MemberIndex.load(
            CLK_BITS,
            [f"{name}{i}" for i in range(start, start + size)],
            as_words(clks[start : start + size], CLK_BITS),
            threshold=0.8,
        )
        for name, start in starts.items()
    }


# -- a matcher on a clock the test moves ----------------------------------------------------


HOUR = 3600


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def start(data_dir: Path, clock: Clock, sweep_interval: float = HOUR) -> Matcher:
    server = create_server(
        "127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=1, clock=clock, sweep_interval=sweep_interval
    )
    return Matcher(server, data_dir, ADMIN_TOKEN)


# The project secret of the `messy_members` fixture's encodings (tests/conftest.py).
MESSY_SECRET = b"the members' project secret"

# -- raw RPCs, and what the matcher keeps ---------------------------------------------------


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def upload_messages(
    project: str, clks: bytes, *, clk_bits: int = 1024, fingerprint: bytes = bytes(32)
) -> list[pb.UploadRequest]:
    header = pb.UploadHeader(
        project=project,
        clk_bits=clk_bits,
        record_count=len(clks) // (clk_bits // 8),
        fingerprint=fingerprint,
        sha256=hashlib.sha256(clks).hexdigest(),
    )
    return [pb.UploadRequest(header=header), pb.UploadRequest(clks=clks)]


def stub(channel: grpc.Channel) -> pb_grpc.MatcherStub:
    return pb_grpc.MatcherStub(channel)


def db_rows(data_dir: Path, table: str, db: str = "blindmatch.sqlite") -> list[tuple]:
    """Rows of one table, read through a separate connection (as an outsider would)."""
    with closing(sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True)) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


DATABASES = ("blindmatch.sqlite", "index.sqlite")
SQLITE_FILES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal")


def tables(data_dir: Path, db: str) -> list[str]:
    """Every table of a database, as the database itself lists them."""
    with closing(sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        return [name for (name,) in rows]


def snapshot(matcher: Matcher) -> dict[str, object]:
    """Every row of every table of both databases, and every file the matcher keeps: each
    file's name, and its content unless it is a database's (whose rows are above)."""
    data_dir = matcher.data_dir
    state: dict[str, object] = {}
    for db in DATABASES:
        with closing(sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True)) as conn:
            for table in tables(data_dir, db):
                rows = conn.execute(f"SELECT * FROM {table}").fetchall()
                state[f"{db}:{table}"] = sorted(rows, key=repr)
    state["files"] = {
        str(p.relative_to(data_dir)): None
        if p.name.endswith(SQLITE_FILES)
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }
    return state


def set_layout(db: Path, layout: int) -> None:
    """Write a store's layout into its header (`PRAGMA user_version`), as a newer
    blindmatch would (the store closed; nothing left beside it after)."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {layout}")
        conn.commit()


def files_of(data_dir: Path) -> dict[str, bytes]:
    """Every file under `data_dir`, by its path there, with its bytes."""
    found = (p for p in data_dir.rglob("*") if p.is_file())
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in found}


def corrupt_table(db_path: Path, table: str) -> None:
    """Scribble over the b-tree header of `table`'s root page, as a bad disk block would
    (the database must be closed: nothing of it left in a -wal file)."""
    with closing(sqlite3.connect(db_path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    assert root is not None, f"no table {table} in {db_path}"
    with open(db_path, "r+b") as fh:
        fh.seek((root[0] - 1) * page_size)
        fh.write(b"\x0d\xff\xff\xff\xff\xff\xff\xff" * 8)


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs, "3m") mounted at `where`, so writes end in a
    genuine ENOSPC; the test is skipped where mounting needs a root this run lacks."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(disk: Path) -> Path:
    """Take every free byte of `disk`, as another process on the host might; the filler."""
    filler = disk / "filler"
    fh = open(filler, "wb")  # noqa: SIM115 - closed below, where a full disk may refuse it
    with suppress(OSError):
        while True:
            fh.write(bytes(4096))
            fh.flush()
    with suppress(OSError):
        fh.close()
    return filler


def in_process_servers(
    uploads: list[SharedUpload], *, lacking: bool = True, dummies: float = 0.0
) -> tuple[twoserver.BlockingServer, twoserver.ShareServer]:
    """S1 and S2 in this process holding the members' `uploads` under a fresh pair key (S1
    told who lacks the fallback's fields unless `lacking` is False: C then says it)."""
    key = secrets.token_bytes(32)  # S1's and S2's, never C's
    s1 = twoserver.BlockingServer(
        [u.s1.bands for u in uploads], [u.s1.shares for u in uploads], key,
        [u.s1.popcounts for u in uploads],
        [u.s1.lacking for u in uploads] if lacking else None,
        dummies,
    )  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], key,
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    return s1, s2


def short_index_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matchers started after this wait 0.5 s for another writer's lock on `index.sqlite`, not
    SQLite's 5 s: for tests that hold that lock on purpose, whose every locked write would
    otherwise wait out the 5 s (the behaviour is the same, a refused write, sooner)."""
    from blindmatch.matcher.storage import index_store

    monkeypatch.setattr(index_store, "PRAGMAS", (*index_store.PRAGMAS, "busy_timeout=500"))


def short_check_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check_data_dir` (`admin check`) run in this process reports what looks left of an
    erasure if it is still there 0.1 s later, not `GRACE_S`' 2 s: for tests that check a data
    dir no erasure is in progress in (the matcher stopped, or its erasure unable to finish:
    S2 down), where the grace only waits (the same findings, sooner). The grace's own test,
    a check beside a member erasing in a loop (tests/test_erasure_check.py), keeps 2 s."""
    from blindmatch.matcher.storage import erasure_check

    monkeypatch.setattr(erasure_check, "GRACE_S", 0.1)


@contextmanager
def low_change_limit(tmp_path: Path) -> Iterator[tuple[str, str, Encoded]]:
    """A matcher whose index changes carry at most 64 KiB (`serve --max-index-change-mib`),
    south's token in its project "trial", and an ENCODED folder of 2,000 random 1,024-bit
    CLKs (320 KB of references and CLKs: `index sync` sends it in several changes)."""
    from blindmatch.client.encoding.encoded import write_encoded

    server = create_server(
        "127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, max_index_change_bytes=64 * 1024
    )
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            token = op.create_project("trial", ["north", "south"]).tokens["south"]
        rng = np.random.default_rng(7)
        folder = write_encoded(
            tmp_path / "south.encoded",
            clks=rng.integers(0, 256, 2000 * 128, dtype=np.uint8).tobytes(),
            clk_bits=1024,
            fingerprint=bytes(range(32)),
            ids=[f"S-{i:05d}" for i in range(2000)],
            report={},
            rule=None,
        )
        yield target, token, folder
    finally:
        server.stop(grace=None)


@contextmanager
def cli_server(argv: list[str], env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """`python -m blindmatch ARGV`, a server (`serve`, `two-server role`, ...), until its own
    line on stderr (`blindmatch ... listening on ...`, not the log's) says it listens: the
    lines it said, that one last; terminated afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "blindmatch", *argv], stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)  # fmt: skip
    assert proc.stderr is not None
    said: list[str] = []
    try:
        while not said or not re.match(r"blindmatch .* listening on ", said[-1]):
            line = proc.stderr.readline()
            assert line, f"it exited {proc.wait()}: {''.join(said)}"
            said.append(line)
        yield said
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stderr.close()
