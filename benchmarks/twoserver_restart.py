"""What keeping a two-server role's uploads and pair budget on disk costs (`two-server role
--data-dir`, matcher/storage/role_store.py): the upload's extra cost against memory only,
the bytes on disk a record, and the time a restarted role takes to hold them again.

    .venv/bin/python benchmarks/twoserver_restart.py [--records 5000] [--roles s1,s2]
        [--repeats 2] [--run] [--bands 1600] [--seed 0]

Two members of `--records` realistic CLKs each (benchmarks/realclks.py `realistic_pair`, the
default schema: a record-level CLK and a fallback CLK; 10% of A's people in B), made into
their two-server uploads under the recommended keyed blocking (`--roles s2`: S2's part only,
the second shares and seal key, without sealing S1's band keys: S1's part of 50,000 records
is several GB a member). The roles run in this process (`create_role`, loopback gRPC), so
CPU seconds are the client's and the role's together. Then:

- **upload**: both members' uploads sent to each role in `--roles`, alternately to roles
  without a data dir (memory only) and with one (the audit entry, the arrays written and
  fsynced, the row committed), `--repeats` times each: wall and CPU seconds, and the ratios;
- **on disk**: the bytes of each role's store (`twoserver-ROLE-held.sqlite` and its folder),
  a record;
- **restore**: each role started again on its data dir (`create_role`): wall and CPU seconds
  until it listens, holding both uploads again;
- with `--run` (S1 and S2): the combiner runs once on the restarted roles (wall and CPU
  seconds), then the same run on roles without a data dir (the uploads sent to them), S1 and
  S2 restart on their data dirs (restoring the pairs spent too, and how long that took), and
  a second run is refused as before the restart.

The machine's other load counts in the wall seconds; the ratios are from the same run.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import layout, realistic_pair
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing
from blindmatch.client.errors import RejectedError
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role

THRESHOLD = 0.8
KEY, MEMBER_KEY = os.urandom(16).hex(), os.urandom(16).hex()
MEMBERS = ("a", "b")


def s2_only(clks: sharing.Clks, fallback_bits: int) -> sharing.SharedUpload:
    """S2's part of a member's upload (the second shares of both CLKs and their popcounts,
    a seal key), with nothing of S1's made (it is never sent)."""
    cut = clks.shape[1] - fallback_bits // 8
    second, pops, pop2 = [], [], []
    for part in (clks[:, :cut], clks[:, cut:]):
        part = sharing.np.ascontiguousarray(part)
        second.append(sharing.split_shares(part)[1])
        pops.append(sharing.popcounts(part))
        pop2.append(sharing.popcount_shares(pops[-1], 8 * part.shape[1])[1])
    return sharing.SharedUpload(
        sharing.ToS1((None, None), (), (), None),  # type: ignore[arg-type]
        sharing.ToS2(tuple(second), os.urandom(sharing.SEAL_KEY_BYTES), tuple(pop2)),
        sharing.ToCombiner(tuple(pops)),
    )


def start(roles: list[str], base: Path | None, s2_port: int = 0) -> dict[str, RunningRole]:
    """S2 (and S1, calling it): on data dirs under `base`, or memory only."""
    out: dict[str, RunningRole] = {}
    for role in ("s2", "s1"):
        if role == "s1" and "s1" not in roles:
            continue
        data = None if base is None else base / role
        port = s2_port or (out["s2"].port if "s2" in out else 0)
        out[role] = create_role(role, "127.0.0.1:0", KEY, MEMBER_KEY, data_dir=data,
                                s2=f"127.0.0.1:{port}" if role == "s1" else "")  # fmt: skip
    return out


def stop(running: dict[str, RunningRole]) -> None:
    for r in running.values():
        r.stop(grace=None)
    running.clear()
    gc.collect()


def send(running: dict[str, RunningRole], roles: list[str], uploads: list[sharing.SharedUpload]
         ) -> tuple[float, float]:  # fmt: skip
    w0, c0 = time.perf_counter(), time.process_time()
    for name, up in zip(MEMBERS, uploads, strict=True):
        for role in roles:
            with RoleClient(role, f"127.0.0.1:{running[role].port}", MEMBER_KEY) as rc:
                rc.upload(name, up)
    return time.perf_counter() - w0, time.process_time() - c0


def stored_bytes(data: Path, role: str) -> int:
    files = [*data.glob(f"twoserver-{role}-held.sqlite*"),
             *(data / f"twoserver-{role}-held").iterdir()]  # fmt: skip
    return sum(f.stat().st_size for f in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records a member")
    parser.add_argument("--roles", default="s1,s2", help="s1,s2 or s2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", action="store_true", help="run, restart, run again")
    parser.add_argument("--bands", type=int, default=sharing.RECOMMENDED.bands)
    parser.add_argument("--seed", type=int, default=0)
    add_keep(parser)
    args = parser.parse_args()
    plan = sharing.BandPlan(sharing.RECOMMENDED.bits, args.bands)
    roles = args.roles.split(",")
    _, fallback_bits = layout()
    pair = realistic_pair(args.records, args.records, args.seed, whole=True, quiet=True)
    secret = os.urandom(32)
    t0 = time.perf_counter()
    if "s1" in roles:
        uploads = [sharing.shared_upload(x, secret, plan, fallback_bits)
                   for x in (pair.a, pair.b)]  # fmt: skip
    else:
        uploads = [s2_only(x, fallback_bits) for x in (pair.a, pair.b)]
    del pair
    print(f"2 x {args.records:,} records to {'+'.join(roles)}; uploads made in "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    with work_dir("bm-restart-", keep=args.keep) as tmp:
        times: dict[str, list[tuple[float, float]]] = {"memory": [], "disk": []}
        for k in range(args.repeats):
            for mode in ("memory", "disk"):
                base = tmp / f"{mode}{k}" if mode == "disk" else None
                running = start(roles, base)
                times[mode].append(send(running, roles, uploads))
                stop(running)
        for mode, got in times.items():
            print(f"upload ({mode}): " + ", ".join(f"{w:.2f} s wall / {c:.2f} s CPU"
                                                   for w, c in got))  # fmt: skip
        wm, cm = (min(x[i] for x in times["memory"]) for i in (0, 1))
        wd, cd = (min(x[i] for x in times["disk"]) for i in (0, 1))
        print(f"upload with a data dir / memory only (best of {args.repeats}): wall "
              f"{wd / wm:.2f}x, CPU {cd / cm:.2f}x")  # fmt: skip
        base = tmp / f"disk{args.repeats - 1}"
        for role in roles:
            n = stored_bytes(base / role, role)
            print(f"{role} on disk: {n / 1e6:,.1f} MB, {n / (2 * args.records):,.0f} bytes a "
                  "record")  # fmt: skip
        for k in range(args.repeats - 1):
            shutil.rmtree(tmp / f"disk{k}")
        w0, c0 = time.perf_counter(), time.process_time()
        running = start(roles, base)
        print(
            f"restore ({'+'.join(roles)}, 2 x {args.records:,} records at each): "
            f"{time.perf_counter() - w0:.2f} s wall, {time.process_time() - c0:.2f} s CPU"
        )
        for role in roles:
            held = running[role].service.held
            assert sorted(held) == list(MEMBERS), (role, sorted(held))
        ok = True
        if args.run and "s1" in roles:
            ok = run_and_restart(running, roles, base, uploads)
        stop(running)
    return 0 if ok else 1


def run_and_restart(
    running: dict[str, RunningRole], roles: list[str], base: Path,
    uploads: list[sharing.SharedUpload],
) -> bool:  # fmt: skip
    """Whether the links were the same on both and the second run was refused."""

    def combined() -> RunningRole:
        c = create_role("combiner", "127.0.0.1:0", KEY, MEMBER_KEY,
                        s1=f"127.0.0.1:{running['s1'].port}",
                        s2=f"127.0.0.1:{running['s2'].port}")  # fmt: skip
        send({"combiner": c}, ["combiner"], uploads)  # how many records: nothing to keep
        return c

    def timed_run(label: str) -> int:
        c = combined()
        w0, c0 = time.perf_counter(), time.process_time()
        with RoleClient("combiner", f"127.0.0.1:{c.port}", KEY) as rc:
            got = rc.run(THRESHOLD, list(MEMBERS))
        print(f"run ({label}): {time.perf_counter() - w0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU, {got.comparisons:,} pairs, "
              f"{len(got.score):,} links; pairs spent at S1 "
              f"{running['s1'].service.budget.pairs():,}")  # fmt: skip
        c.stop(grace=None)
        return len(got.score)

    links = timed_run("after the restart, with a data dir")
    stop(running)
    # The same run on roles that keep nothing (the members' uploads sent again).
    running.update(start(roles, None))
    send(running, roles, uploads)
    same = timed_run("memory only") == links
    print(f"same links memory only: {same}")
    stop(running)
    w0, c0 = time.perf_counter(), time.process_time()
    running.update(start(roles, base))
    print(f"restore with the pairs spent: {time.perf_counter() - w0:.2f} s wall, "
          f"{time.process_time() - c0:.2f} s CPU; S1 holds "
          f"{running['s1'].service.budget.pairs():,} pairs evaluated")  # fmt: skip
    c = combined()
    try:
        with RoleClient("combiner", f"127.0.0.1:{c.port}", KEY) as rc:
            rc.run(THRESHOLD, list(MEMBERS))
        print("second run after the restart: NOT refused")
        refused = False
    except RejectedError as exc:
        print(f"second run after the restart: refused ({str(exc)[:90]}...)")
        refused = True
    c.stop(grace=None)
    return same and refused


if __name__ == "__main__":
    raise SystemExit(main())
