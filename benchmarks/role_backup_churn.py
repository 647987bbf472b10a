"""Whether `admin backup` of a two-server role passes its own check beside members uploading
again and forgetting (matcher/storage/role_backup.py: the held store and the audit log read
at one moment), and how many of its copies hold an upload in flight.

    .venv/bin/python benchmarks/role_backup_churn.py [--backups 30] [--churn uf] [--apart]

S2 serves alone in this process with a data dir (uploads of 40 synthetic 128-bit CLKs).
With `u` in `--churn`, member p/west uploads two different uploads in turn, in a loop; with
`f`, member q/east uploads and is forgotten, in a loop. Meanwhile `--backups` backups are
taken; `--apart` takes the two snapshots one after the other (the held store, then the log:
the way `admin backup` took them before). Printed: the backups that failed (their copy's
check), each backup's check (problems, and uploads noted as logged again and not held: the
check failed those before it noted them), and the uploads and forgets made meanwhile. The
machine's other load counts in every second.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import tickets
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.storage import role_backup
from blindmatch.matcher.storage.backup import BackupError, copy_kept, pinned, snapshot
from blindmatch.matcher.storage.quietread import connect_read_only
from blindmatch.matcher.storage.role_check import RoleFiles, check_role_dir
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

PARTIES, MEMBERS = "the parties' key of the benchmark", "the members' key"
WEST, EAST = "p/west/0000000a", "q/east/0000000b"


def _take_apart(source: RoleFiles, staging: RoleFiles, clock: Callable[[], float]
                ) -> tuple[int, int, int, float] | None:  # fmt: skip
    """One attempt the way `admin backup` took it before: the held store's snapshot, the
    files its rows name, then the audit log's snapshot."""
    with pinned(source.folder, staging.folder) as pins:
        snapshot(source.held_db, staging.held_db)
        taken = clock()
        db = connect_read_only(staging.held_db)
        try:
            files = [f"{f}.bin" for (f,) in db.execute("SELECT file FROM uploads ORDER BY id")]
        finally:
            db.close()
        copied = copy_kept(files, source.folder, staging.folder, pins)
    if copied is None:
        return None
    snapshot(source.audit_db, staging.audit_db)
    role_backup._settle(staging.audit_db)
    return copied[0], copied[1], role_backup._seal(staging.held_db, taken), taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backups", type=int, default=30)
    parser.add_argument("--churn", default="uf", help="u: re-uploads; f: upload and forget")
    parser.add_argument("--apart", action="store_true", help="the two snapshots one by one")
    add_keep(parser)
    args = parser.parse_args(argv)
    with work_dir("role-backup-churn-", keep=args.keep) as root:
        return bench(args, root)


def bench(args: argparse.Namespace, root: Path) -> int:
    """The benchmark in `root` (deleted by `main` afterwards)."""
    role = create_role("s2", "127.0.0.1:0", PARTIES, MEMBERS, data_dir=root / "s2")
    rng = np.random.default_rng(1)
    ups = [client.shared_upload(rng.integers(0, 256, (40, 128), dtype=np.uint8), b"s",
                                client.BandPlan(4, 4)) for _ in range(2)]  # fmt: skip
    stop, done = threading.Event(), {"uploads": 0, "forgets": 0}

    def send(name: str, up: client.SharedUpload) -> None:
        ticket = tickets.issue(MEMBERS, name, int(time.time()) + 600)
        with RoleClient("s2", f"127.0.0.1:{role.port}", ticket) as c:
            c.upload(name, up)

    def reupload() -> None:
        while not stop.is_set():
            send(WEST, ups[done["uploads"] % 2])
            done["uploads"] += 1

    def upload_and_forget() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{role.port}") as channel:
            stub = pb_grpc.TwoServerSharesStub(channel)
            while not stop.is_set():
                send(EAST, ups[0])
                stub.Forget(pb.ForgetRequest(project="q", member="east"),
                            metadata=[("authorization", f"Bearer {PARTIES}")])  # fmt: skip
                done["forgets"] += 1

    threads = [threading.Thread(target=reupload)] if "u" in args.churn else []
    threads += [threading.Thread(target=upload_and_forget)] if "f" in args.churn else []
    send(WEST, ups[0])
    for thread in threads:
        thread.start()
    failed, problems, in_flight = 0, 0, 0
    try:
        with mock.patch.object(role_backup, "_take", _take_apart) if args.apart else nullcontext():
            for i in range(args.backups):
                dest = root / f"b{i}"
                try:
                    role_backup.backup_role_dir(root / "s2", dest, "s2")
                except BackupError as exc:
                    failed += 1
                    print(f"backup {i} failed: {str(exc).splitlines()[-1]}", file=sys.stderr)
                    continue
                report = check_role_dir(dest, "s2", audit_key_file=root / "s2" /
                                        "twoserver-s2.audit.key")  # fmt: skip
                problems += len(report.problems)
                in_flight += sum("logged again" in r for r in report.repairs)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        role.stop(grace=None)
    way = "one after the other" if args.apart else "read together"
    print(f"{args.backups} backups ({way}), churn {args.churn!r}: {failed} failed; of the "
          f"others, {problems} problems, {in_flight} with an upload in flight; meanwhile "
          f"{done['uploads']} uploads again, {done['forgets']} forgets")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
