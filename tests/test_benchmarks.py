"""The benchmark scripts still run (at a toy size: their figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parent.parent


def test_the_realtime_benchmark_runs_and_finds_every_planted_hit() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/realtime.py", "--records", "2000", "--queriers", "2",
         "--queries", "3", "--change", "300", "--change-queries", "5", "--warm-up", "40",
         "--clients", "async,session,calls", "--clks", "synthetic", "--lookup-queries", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # a missed hit exits 1
    for client in ("async", "session", "calls"):  # each way of asking, each run
        assert f"closed loop, {client}: 6 queries" in done.stdout
    assert "planted hits missed 0 of 3" in done.stdout
    assert "2 queriers, closed loop, p50 ms by client: async" in done.stdout
    assert "warm-up (not counted), async: 40 queries" in done.stdout
    assert "300 records changed meanwhile" in done.stdout
    assert "index change (300 puts" in done.stdout
    assert "visible to the next query: True" in done.stdout
    assert "disclosure entries written in" in done.stdout  # the audit group commits
    assert "real-time look-ups: " in done.stdout and " passes" in done.stdout
    assert "look-up alone, in process, 3 x 2,000 records" in done.stdout
    for client in ("async", "session", "calls"):  # the serving overhead, each way of asking
        assert f"2 queriers, {client}: matcher CPU outside the look-up" in done.stdout


def test_the_startup_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/startup.py", "--runs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "blindmatch --help" in done.stdout and "x python" in done.stdout


def test_the_quality_grid_runs_on_both_generators_through_the_cli() -> None:
    # 500 people (was 1,000): the rows and real F1 figures are the claim, not their size;
    # the CLI's processes are most of the time either way.
    done = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--grid", "--populations", "500",
         "--corruptions", "1.0", "--flows", "anchor", "blindmatch", "--no-privacy"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| messy", "| households"]
    for row in rows[2:]:  # F1 (precision/recall) of both flows: real figures, not blanks
        f1_anchor, f1_blindmatch = (float(c.split()[0]) for c in row.split(" | ")[4:6])
        assert 0.5 < f1_anchor <= 1 and 0.5 < f1_blindmatch <= 1, row


def test_the_quality_grid_runs_the_two_server_flow_beside_the_clk_flow() -> None:
    """The same exports and secret in a CLK project and in a two-server project (S1, S2 and
    the matcher as processes): both flows' F1 and their difference in points. 500 people:
    members this small are compared without blocking (matcher/core/exhaustive.py), every
    pair through the link-bit circuit, a quarter of 1,000 people's pairs."""
    done = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--grid", "--generators", "messy",
         "--populations", "500", "--corruptions", "1.0", "--flows", "blindmatch",
         "two-server", "--one-secret", "--no-privacy"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert "two-server - blindmatch: F1 pt" in rows[0] and len(rows) == 3
    cells = rows[2].split(" | ")
    f1_clk, f1_two = (float(c.split()[0]) for c in cells[4:6])
    assert 0.5 < f1_clk <= 1 and 0.5 < f1_two <= 1, rows[2]
    # e.g. "+0.00; 342 / 0 (0 true) / 0 (0 true)": hits both, two-server only, CLK only
    points, hits = cells[6].split("; ")
    assert abs(float(points) - 100 * (f1_two - f1_clk)) < 0.01, rows[2]
    assert int(hits.split(" / ")[0].replace(",", "")) > 0, rows[2]


def test_the_two_server_quality_benchmark_runs_on_both_generators() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/twoserver_quality.py", "--population", "500",
         "--bands", "400"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("## ") == 2  # messy, households
    f1_rows = [line for line in done.stdout.splitlines() if line.startswith("| f1 |")]
    for row in f1_rows:  # F1 of both runs, and their ratio: real figures
        exhaustive, two_server = (float(c) for c in row.split(" | ")[1:3])
        assert 0.5 < exhaustive <= 1 and 0.5 < two_server <= 1, row
    assert len(f1_rows) == 2
    assert done.stdout.count("| blocking recall, pairs at Dice >= 0.8 |") == 2
    assert done.stdout.count("| CPU s, messages (S2) |") == 2


def test_the_two_server_run_over_three_role_processes_gives_the_in_process_links() -> None:
    """benchmarks/twoserver_rpc.py starts `blindmatch two-server role` three times."""
    done = subprocess.run(
        [sys.executable, "benchmarks/twoserver_rpc.py", "--records", "300", "--bands", "100"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same links in process and over gRPC: yes" in done.stdout
    over_grpc = next(line for line in done.stdout.splitlines() if line.startswith("over gRPC"))
    assert "S1->S2" in over_grpc and " 0 links" not in over_grpc


def test_the_twoserver_restart_benchmark_restores_and_refuses_a_second_run() -> None:
    """benchmarks/twoserver_restart.py: uploads kept, restored, the run's pairs kept."""
    done = subprocess.run(
        [sys.executable, "benchmarks/twoserver_restart.py", "--records", "300", "--bands",
         "100", "--repeats", "1", "--run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same links memory only: True" in done.stdout
    assert "second run after the restart: refused" in done.stdout
    assert "s1 on disk: " in done.stdout and "restore (s1+s2, 2 x 300 records" in done.stdout


def test_the_twoserver_backup_benchmark_backs_up_checks_and_restores() -> None:
    """benchmarks/twoserver_backup.py: each role backed up and checked while serving, then
    restored and started holding its uploads."""
    done = subprocess.run(
        [sys.executable, "benchmarks/twoserver_backup.py", "--records", "300", "--bands", "100",
         "--churn", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("admin backup (serving)") == 2
    assert done.stdout.count("admin restore --previous") == 2
    assert "s1+s2 started on the restored dirs" in done.stdout
    assert "2 backups beside" in done.stdout and "dropped ['b']" in done.stdout


def test_the_twoserver_watch_benchmark_tells_the_watch_of_each_upload() -> None:
    """benchmarks/twoserver_watch.py: a two-server watch told of each of south's uploads."""
    done = subprocess.run(
        [sys.executable, "benchmarks/twoserver_watch.py", "--size", "400", "--uploads", "2",
         "--watched", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "south: its return -> last event" in done.stdout
    events = next(line for line in done.stdout.splitlines() if line.startswith("south: events"))
    assert events != "south: events an upload: [0]" and "," not in events  # each upload alike


def test_the_watch_cli_benchmark_prints_every_event_and_closes_at_ctrl_c() -> None:
    """benchmarks/watch_cli.py: `blindmatch watch` told of each of south's index additions."""
    done = subprocess.run(
        [sys.executable, "benchmarks/watch_cli.py", "--size", "600", "--people", "3",
         "--rounds", "2", "--idle", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # an event missed exits 1
    assert "events printed: 6 (expected 6)" in done.stdout
    assert "SIGINT -> exited 0" in done.stdout


def test_the_second_generator_writes_exports_the_documented_flow_reads(tmp_path: Path) -> None:
    """Its four organisations' mappings (full-name splits among them) read every record."""
    from benchmarks.households import population, write_exports
    from blindmatch.client.encoding.encode import encode_csv
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.schema import load_schema

    exports = write_exports(tmp_path, seed=4, size=3000)
    schema = load_schema(ROOT / "schemas" / "person-uk.json")
    for export in exports.values():
        report = encode_csv(export.csv, schema, load_mapping(export.mapping, schema), b"k").report
        assert report.rows_encoded == len(export.truth)
        names = [f for f in report.fields if f.field in ("given_name", "surname")]
        assert all(f.present > 0.95 * report.rows_encoded for f in names), report.render()
    import random

    people = population(3000, random.Random(4))
    households = {}
    for p in people:
        households.setdefault(p.household, []).append(p)
    twins = [h for h in households.values() if len({p.dob for p in h}) < len(h)]
    assert twins and max(len(h) for h in households.values()) <= 5


def test_realistic_encodings_are_what_blindmatch_encode_makes(tmp_path: Path) -> None:
    from benchmarks import realclks
    from benchmarks.exports import write_export
    from blindmatch.client.encoding.encoded import CLKS, read_encoded
    from blindmatch.matcher.core import kernel
    from tests.support import Org, encode_cli

    one = realclks.realistic_pair(1_500, 1_200, seed=5, workers=1, cache=False, quiet=True)
    two = realclks.realistic_pair(1_500, 1_200, seed=5, workers=2, cache=False, quiet=True)
    assert one.a.shape == (1_500, 128) and one.b.shape == (1_200, 128)
    # The same whatever the number of processes; no row repeated to make up the size.
    assert np.array_equal(one.a, two.a) and np.array_equal(one.b, two.b)
    assert len(np.unique(one.a, axis=0)) == 1_500
    # 10% of A's people are in B, and the exact kernel finds nearly all of them at 0.8.
    assert len(one.truth_a) == 150
    _, ia, ib = kernel.dice_candidates(one.a, one.b, 0.8)
    found = set(zip(ia.tolist(), ib.tolist(), strict=True))
    truth = set(zip(one.truth_a.tolist(), one.truth_b.tolist(), strict=True))
    assert len(found & truth) >= 0.95 * len(truth)
    # A's rows are what `blindmatch encode` makes of A's export (default schema).
    rows_a, _ = realclks.exports(5, 0, 2_550, 1_500, 150)
    style = realclks.STYLE_A
    header = [style.id_column, *style.columns.values()]
    export = write_export(tmp_path, style.name, header, rows_a, style.mapping_toml(), [0] * 1_500)
    secret = tmp_path / "secret"
    secret.write_bytes(realclks.SECRET)
    out = tmp_path / "enc"
    assert encode_cli(Org(export.csv, export.mapping), secret, out, realclks.SCHEMA) == 0
    encoded = read_encoded(out)
    assert encoded.record_count == 1_500 and encoded.fallback_bits == 1024
    uploaded = np.frombuffer((out / CLKS).read_bytes(), np.uint8).reshape(1_500, 256)
    assert np.array_equal(uploaded[:, :128], one.a)  # the record-level CLK, before the fallback
    # `whole`: the CLKs as uploaded, fallback CLK included (what a standing index holds).
    whole = realclks.realistic_pair(
        1_500, 1_200, seed=5, workers=1, cache=False, quiet=True, whole=True
    )
    assert realclks.layout() == (2048, 1024) and np.array_equal(whole.a, uploaded)


def test_realclks_draws_the_held_out_households_people_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`generator="households"`: households.py's people, exported by its two police forces,
    encoded by the same path and cached under their own name; messy.py's are unchanged."""
    from benchmarks import realclks
    from blindmatch.matcher.core import kernel

    monkeypatch.setattr(realclks, "CACHE", tmp_path)
    messy = realclks.realistic_pair(600, 500, seed=5, workers=1, quiet=True)
    held = realclks.realistic_pair(600, 500, seed=5, workers=1, quiet=True, generator="households")
    assert held.a.shape == messy.a.shape == (600, 128) and held.b.shape == (500, 128)
    assert not np.array_equal(held.a, messy.a) and len(held.truth_a) == 60
    _, ia, ib = kernel.dice_candidates(held.a, held.b, 0.8)
    found = set(zip(ia.tolist(), ib.tolist(), strict=True))
    truth = set(zip(held.truth_a.tolist(), held.truth_b.tolist(), strict=True))
    assert len(found & truth) >= 0.8 * len(truth)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [realclks.cache_dir(600, 500, 5, 0.1).name,
         realclks.cache_dir(600, 500, 5, 0.1, "households").name]
    )  # fmt: skip
    assert realclks.cache_dir(600, 500, 5, 0.1).name.startswith("real-v2-")
    assert realclks.cache_dir(600, 500, 5, 0.1, "households").name.startswith("real-households-")
    rows_a, rows_b = realclks.exports(5, 0, 30, 20, 5, "households")
    assert len(rows_a) == 20 and len(rows_b) == 15
    assert set(rows_a[0]) == {"CustodyRef", "Name", "DateOfBirth", "Gender", "PostCode"}
    assert "forename" in rows_b[0] and "," in rows_a[0]["Name"]
    again = realclks.realistic_pair(600, 500, seed=5, quiet=True, generator="households")
    assert np.array_equal(again.b, held.b)  # read back from its own cache
    with pytest.raises(ValueError, match="generator"):
        realclks.realistic_pair(60, 50, cache=False, generator="census")


def test_a_version_1_cache_serves_the_record_level_clks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VERSION 1 caches held the record-level CLKs only: read back for them, never for
    `whole` (which encodes afresh)."""
    from benchmarks import realclks

    monkeypatch.setattr(realclks, "CACHE", tmp_path)
    fresh = realclks.realistic_pair(300, 200, seed=7, workers=1, cache=False, quiet=True)
    v1 = tmp_path / realclks.cache_dir(300, 200, 7, 0.1).name.replace("v2-", "v1-", 1)
    v1.mkdir()
    marked = fresh.a.copy()
    marked[0] ^= 0xFF  # tells the cached rows from encoded ones
    for name, arr in (("a", marked), ("b", fresh.b), ("truth_a", fresh.truth_a),
                      ("truth_b", fresh.truth_b)):  # fmt: skip
        np.save(v1 / f"{name}.npy", arr)
    assert np.array_equal(realclks.realistic_pair(300, 200, seed=7, quiet=True).a, marked)
    whole = realclks.realistic_pair(300, 200, seed=7, workers=1, quiet=True, whole=True)
    assert whole.a.shape == (300, 256) and np.array_equal(whole.a[:, :128], fresh.a)


def test_the_end_to_end_run_uploads_what_the_schema_makes_blindmatch_encode_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`speed.py --only end-to-end`: by default the default schema's uploads (its fallback CLK
    and rule, so the run rescores by the rule), person-uk-no-rule.json's (the fallback CLK
    alone), or with `--record-level` the first CLKs only (no fallback)."""
    from benchmarks import realclks, speed

    monkeypatch.setattr(realclks, "CACHE", tmp_path)
    ruled = speed.end_to_end(300, "auto")
    bare = speed.end_to_end(300, "auto", schema=realclks.NO_RULE_SCHEMA)
    record = speed.end_to_end(300, "auto", schema=None)
    assert ruled.method.endswith("+fallback+rule")
    assert bare.method.endswith("+fallback") and "+rule" not in bare.method
    assert "+fallback" not in record.method and record.method != "?"
    assert all(20 <= x.groups <= 40 for x in (ruled, bare, record))  # 30 people shared
    with pytest.raises(SystemExit, match="not the default schema's CLKs"):
        speed.uploads("realistic", 300, ROOT / "schemas" / "person-uk-field-level.json")


def test_the_role_backup_churn_benchmark_backs_up_beside_uploads_and_forgets() -> None:
    """benchmarks/role_backup_churn.py: backups read together pass their check."""
    done = subprocess.run(
        [sys.executable, "benchmarks/role_backup_churn.py", "--backups", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 backups (read together), churn 'uf': 0 failed; of the others, 0 problems" in (
        done.stdout
    )


def test_the_check_index_audit_benchmark_checks_a_matcher_ok() -> None:
    """benchmarks/check_index_audit.py: the cross-check of a member's changes, timed."""
    done = subprocess.run(
        [sys.executable, "benchmarks/check_index_audit.py", "--changes", "20", "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 changes, 21 audit entries, 41 records, ok True" in done.stdout


def test_the_erasure_repair_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/erasure_repair.py", "--records", "2000", "--huge", "5000",
         "--repeats", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "start-up repair of it, wall" in done.stdout
    assert "saying it was waiting" in done.stdout and "and succeeded" in done.stdout


def test_the_erasure_kills_benchmark_runs_and_serves_no_erased_index() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/erasure_kills.py", "--trials", "2", "--records", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 erased yet its index served after the restart" in done.stdout


def test_the_deal_flip_benchmark_finds_a_flipped_gate_that_keeps_the_link_bit() -> None:
    """One bit of C's c2 flipped: the link bit as honest and a bucket a near-miss test, or the
    link bit at another cut-off (docs/privacy-design.md, "Resuming a pair of members")."""
    done = subprocess.run(
        [sys.executable, "benchmarks/deal_flip.py", "--bits", "64", "--pairs", "512",
         "--buckets", "--show", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": link bit as honest, output " in done.stdout  # a near miss, links untouched
    assert ": the link bit marks " in done.stdout  # the link bit's cut-off moved
    assert "leaving the link bit as honest" in done.stdout


def test_the_load_benchmark_reports_the_peak_of_a_phase_shorter_than_a_sample() -> None:
    """benchmarks/load.py at its smallest: every phase ends inside the sampler's first 0.1 s.
    Each phase's peak once raised KeyError 'upload' there (none sampled in the phase)."""
    done = subprocess.run(
        [sys.executable, "benchmarks/load.py", "--members", "2", "--records", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 concurrent uploads acknowledged" in done.stdout
    assert done.stdout.count("server peak RSS") == 4  # upload, run, results, VmHWM
