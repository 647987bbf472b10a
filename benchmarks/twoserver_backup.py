"""What backing up, checking and restoring a two-server role's data dir costs (`blindmatch
admin backup|check|restore` on `two-server role --data-dir`; matcher/storage/role_backup.py,
role_check.py, role_restore.py).

    .venv/bin/python benchmarks/twoserver_backup.py [--records 2000] [--roles s1,s2]
        [--bands 1600] [--seed 0] [--churn 10]

Two members of `--records` realistic CLKs each (benchmarks/realclks.py `realistic_pair`, as
benchmarks/twoserver_restart.py makes them; `--roles s2`: S2's part only) are uploaded to
each role in `--roles`, which keep them on data dirs. Then, for each role, with the role
serving: `admin backup` (snapshot, copy, seal, the copy's full check), `admin check` of the
live dir with and without hashing, `admin restore --previous` of the backup after the role
stops, and the role's start on the restored dir: wall and CPU seconds each (the CPU is this
process's: the roles run in it too, idle meanwhile) and the bytes copied. The machine's
other load counts in the wall seconds.

With `--churn N`: afterwards, N more backups of each role while member "b" uploads again to
every role in a loop (each upload deletes the file of the one before): how many snapshots
each backup took (a file deleted while it copies makes it take another).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import layout, realistic_pair
from benchmarks.twoserver_restart import MEMBER_KEY, s2_only, send, start, stop
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.rpc.twoserver_service import RunningRole
from blindmatch.matcher.storage.role_backup import backup_role_dir
from blindmatch.matcher.storage.role_check import check_role_dir
from blindmatch.matcher.storage.role_restore import restore_role_dir

T = TypeVar("T")


def timed(what: str, call: Callable[[], T]) -> T:
    w0, c0 = time.perf_counter(), time.process_time()
    out = call()
    print(f"  {what}: {time.perf_counter() - w0:.2f} s wall, {time.process_time() - c0:.2f} s CPU")
    return out


def churn(running: dict[str, RunningRole], roles: list[str],
          uploads: list[sharing.SharedUpload], tmp: Path, n: int) -> None:  # fmt: skip
    """`n` backups of each role while "b" uploads again and again."""
    done = threading.Event()
    sent = [0]

    def again() -> None:
        while not done.is_set():
            for role in roles:
                with RoleClient(role, f"127.0.0.1:{running[role].port}", MEMBER_KEY) as rc:
                    rc.upload("b", uploads[1])
            sent[0] += 1

    thread = threading.Thread(target=again)
    thread.start()
    try:
        attempts: dict[str, list[int]] = {role: [] for role in roles}
        for k in range(n):
            for role in roles:
                out = tmp / f"churn-{role}-{k}"
                attempts[role].append(backup_role_dir(tmp / "live" / role, out, role).attempts)
                shutil.rmtree(out)
    finally:
        done.set()
        thread.join()
    for role, got in attempts.items():
        print(f"{role}: {n} backups beside {sent[0]} uploads of b to {'+'.join(roles)}: "
              f"snapshots each {got}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000, help="records a member")
    parser.add_argument("--roles", default="s1,s2", help="s1,s2 or s2")
    parser.add_argument("--bands", type=int, default=sharing.RECOMMENDED.bands)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--churn", type=int, default=0, help="backups beside uploads")
    add_keep(parser)
    args = parser.parse_args()
    plan = sharing.BandPlan(sharing.RECOMMENDED.bits, args.bands)
    roles = args.roles.split(",")
    _, fallback_bits = layout()
    pair = realistic_pair(args.records, args.records, args.seed, whole=True, quiet=True)
    secret = os.urandom(32)
    if "s1" in roles:
        uploads = [sharing.shared_upload(x, secret, plan, fallback_bits)
                   for x in (pair.a, pair.b)]  # fmt: skip
    else:
        uploads = [s2_only(x, fallback_bits) for x in (pair.a, pair.b)]
    del pair
    with work_dir("bm-rolebackup-", keep=args.keep) as tmp:
        running = start(roles, tmp / "live")
        send(running, roles, uploads)
        print(f"2 x {args.records:,} records held by {'+'.join(roles)}")
        for role in roles:
            live = tmp / "live" / role
            print(f"{role}:")
            done = timed(
                "admin backup (serving)",
                partial(
                    backup_role_dir, live, tmp / f"{role}.backup", role, key_out=tmp / f"{role}.key"
                ),
            )
            print(f"    {done.uploads} uploads, {done.bytes_copied / 1e6:,.1f} MB copied")
            for hashed in (True, False):
                report = timed(
                    f"admin check (serving, {'hashing' if hashed else '--no-hash'})",
                    partial(check_role_dir, live, role, hash_files=hashed),
                )
                assert report.ok, report.render()
        if args.churn:
            churn(running, roles, uploads, tmp, args.churn)
        stop(running)
        for role in roles:
            live = tmp / "live" / role
            live.rename(tmp / f"{role}.broken")
            print(f"{role}:")
            restored = timed("admin restore --previous", partial(
                restore_role_dir, tmp / f"{role}.backup", live, role,
                key_file=tmp / f"{role}.key", previous=tmp / f"{role}.broken"))  # fmt: skip
            print(f"    replayed {restored.replayed} audit entries, dropped {restored.dropped}")
        running = timed(f"{'+'.join(roles)} started on the restored dirs",
                        lambda: start(roles, tmp / "live"))  # fmt: skip
        # (b's uploads during --churn came after the backups: restore drops its, replayed)
        for role in roles:
            want = ["a"] if args.churn else ["a", "b"]
            assert sorted(running[role].service.held) == want, role
        stop(running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
