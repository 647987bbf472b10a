"""The two-server run deployed (three `blindmatch two-server role` processes on loopback)
beside the same run in one process (matcher/core/tworun.py `run`), on the same uploads.

    .venv/bin/python benchmarks/twoserver_rpc.py [--records 5000] [--bits 20] [--bands 1600]
        [--seed 0] [--exhaustive-pairs N]

Two members of `--records` realistic CLKs each (benchmarks/realclks.py `realistic_pair`, the
default schema: a record-level CLK and a fallback CLK; 10% of A's people in B), each made
into its `shared_upload` under the recommended keyed blocking. Then:

- **in process**: S1, S2 and C as objects in this process, the run's wall and CPU seconds,
  and the bytes between the parties as `tworun.run` counts them;
- **over gRPC**: S2, S1 and the combiner started as three processes (`blindmatch two-server
  role`, plaintext on loopback), both members' uploads sent to each (wall seconds, bytes on
  the wire as the parts' sizes), the run started at the combiner (wall seconds; the bytes
  between the parties as the combiner counts them: the messages' serialised sizes, the
  rounds' masked inputs as S1 reports them).

`--exhaustive-pairs N`: S1's cap, in process and given to the S1 process (matcher/core/
exhaustive.py: two members of at most N pairs are compared without blocking; default its
`DEFAULT_PAIRS`; 0 blocks them).

Printed: both runs' figures side by side, each role process's CPU seconds and peak RSS, and
whether their links are the same (they must be: the link bits are exact). The machine's
other load counts in the wall seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.cliflow import BLINDMATCH, _started
from benchmarks.realclks import layout, realistic_pair
from blindmatch.client.encoding import sharing
from blindmatch.client.remote.twoserver import RoleClient, upload_parts
from blindmatch.matcher.core import exhaustive, tworun, twoserver
from blindmatch.matcher.storage.twoserver_audit import RoleAudit

THRESHOLD = 0.8
# The roles run this tree's code (a copy of the tree, say, to measure code before a change),
# not what the venv's `blindmatch` was installed from.


def role_usage(pid: int) -> tuple[float, float]:
    """A role process's CPU seconds (user + system) and peak RSS in MiB, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    hwm = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    return cpu, hwm / 1024


def fmt_bytes(sent: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in sorted(sent.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records a member")
    parser.add_argument("--bits", type=int, default=sharing.RECOMMENDED.bits)
    parser.add_argument("--bands", type=int, default=sharing.RECOMMENDED.bands)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exhaustive-pairs",
        type=int,
        metavar="N",
        help="S1's cap of pairs compared without blocking (default: S1's)",
    )
    args = parser.parse_args()
    cap = exhaustive.or_default(args.exhaustive_pairs)
    plan = sharing.BandPlan(args.bits, args.bands)
    _, fallback_bits = layout()
    pair = realistic_pair(args.records, args.records, args.seed, whole=True, quiet=True)
    secret = os.urandom(32)
    t0 = time.perf_counter()
    uploads = [sharing.shared_upload(x, secret, plan, fallback_bits) for x in (pair.a, pair.b)]
    print(f"2 x {args.records:,} records, keyed blocking {args.bits} bits x {args.bands} bands "
          f"a CLK; the members' uploads made in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    s1 = twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                  b"", [u.s1.popcounts for u in uploads],
                                  exhaustive=cap)  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], b"",
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    c = twoserver.Combiner([u.combiner.popcounts for u in uploads], THRESHOLD)
    w0, c0 = time.perf_counter(), time.process_time()
    local = tworun.run(s1, s2, c)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    t = local.transcript
    print(f"S1's cap {cap:,} pairs: {'not ' if args.records**2 <= cap else ''}blocked")
    print(f"in process: {wall:.1f} s wall ({cpu:.1f} s CPU), {local.comparisons:,} pairs, "
          f"{len(local.links):,} links, {t.rounds:,} rounds; "
          f"{fmt_bytes({f'{a}->{b}': n for (a, b), n in t.sent.items()})}")  # fmt: skip

    # A key a party, each role given the digests of the keys it answers (docs/operations.md).
    member_key = os.urandom(16).hex()
    own = {p: os.urandom(16).hex() for p in ("s1", "s2", "combiner", "operator")}
    procs: dict[str, subprocess.Popen[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        member_key_file = Path(tmp) / "members.key"
        files = {p: Path(tmp) / f"{p}.key" for p in own}
        digests = {p: Path(tmp) / f"{p}.sha256" for p in own}
        for path, text in ((member_key_file, member_key), *((files[r], own[r]) for r in own),
                        *((digests[r], "sha256:" + hashlib.sha256(own[r].encode()).hexdigest())
                          for r in own)):  # fmt: skip
            path.write_text(text)
            path.chmod(0o600)
        answers = {"s2": ("s1", "combiner"), "s1": ("combiner",), "combiner": ("operator",)}
        # Each role on a port the kernel picks (`--listen 127.0.0.1:0`, the port read from its
        # listening line), started after the peers it names: no port picked and let go.
        at: dict[str, str] = {}
        with ExitStack() as stack:
            for role in ("s2", "s1", "combiner"):
                named = {"s2": (), "s1": ("s2",), "combiner": ("s1", "s2")}[role]
                peers = [a for peer in named for a in (f"--{peer}", at[peer])]
                peers += ["--exhaustive-pairs", str(cap)] if role == "s1" else []
                peers += [a for c in answers[role] for a in ("--party-key", f"{c}={digests[c]}")]
                peers += ["--data-dir", str(Path(tmp) / role)]
                served = stack.enter_context(_started(
                    [*BLINDMATCH, "two-server", "role", "--role", role, "--listen", "127.0.0.1:0",
                     "--key-file", str(files[role]), "--member-key-file", str(member_key_file),
                     *peers], "", None,
                ))  # fmt: skip
                at[role], procs[role] = served.target, served.process
            w0 = time.perf_counter()
            sent = 0
            for name, up in zip(("a", "b"), uploads, strict=True):
                for role, target in at.items():
                    sent += sum(p.ByteSize() for p in upload_parts(name, role, up))
                    with RoleClient(role, target, member_key) as rc:
                        rc.upload(name, up)
            upload_wall = time.perf_counter() - w0
            w0 = time.perf_counter()
            with RoleClient("combiner", at["combiner"], own["operator"]) as rc:
                remote = rc.run(THRESHOLD, ["a", "b"])
            run_wall = time.perf_counter() - w0
            used = {role: role_usage(p.pid) for role, p in procs.items()}
        logged = {}
        for role in answers:
            kept = RoleAudit(Path(tmp) / role, role)
            logged[role] = len(kept.log.entries()) if kept.log.verify().ok else -1
            kept.close()
    print(f"audit entries (chain verified): {logged}")
    print(f"over gRPC: uploads {sent / 1e6:,.1f} MB in {upload_wall:.1f} s; run {run_wall:.1f} s "
          f"wall, {remote.comparisons:,} pairs, {len(remote.score):,} links, {remote.rounds:,} "
          f"rounds; {fmt_bytes(remote.bytes_sent)}")  # fmt: skip
    print("roles (CPU s since start, peak RSS MiB): " + ", ".join(
        f"{r} {cpu:.1f} s {rss:,.0f} MiB" for r, (cpu, rss) in sorted(used.items())))  # fmt: skip
    same = all(
        np.array_equal(getattr(remote, n), getattr(local.links, n))
        for n in ("dset", "row", "partner", "partner_row", "score")
    )
    print(f"same links in process and over gRPC: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
