"""Benchmark scripts no other test runs still run, at the smallest sizes their flags allow
(their figures are not checked here, only that each runs to its end and prints its table).

Each group runs in one process, one script after another, as `python benchmarks/X.py ...`
would run it (the script as __main__, its folder first on sys.path): numpy, gRPC and the
native kernel are imported once a group, not once a script. The realistic encodings
(benchmarks/realclks.py) are cached in the test's tmp_path, not the checkout's cache.

Not run here (each needs more than a few seconds at its smallest size, or something not
installed): keyedblocking, lookup_hang, lookupload, lookupservers, lshrecall, rtlayout,
rtlookup, rtshare (LSH tables need at least 40,000 rows), rule2d, rule_fields,
twoserver_completion, twoserver_erase, twoserver_first_query, twoserver_new_project,
twoserver_small, watch_stop, twoserver.py's views (twoserver_attacks, twoserver_views,
twoserver_roles_check), twoserver_rerun_project (grpcproxy's user; the proxy itself is
tested below), splink_link (Splink's own environment, benchmarks/.venv-splink), rtgraph (faiss's
own environment, benchmarks/.venv-faiss; LSH tables need 40,000 rows) and cliwalk
(some 35 CLI processes, each its own start-up: over a minute at its smallest; run once, small,
by tests/test_walkinprocess.py, for the work dir walkinprocess.py reads).
tests/test_docs_benchmarks.py runs every script a page names with `--help`, and parses every
command a page shows with its script's own parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# sys.argv[1]: the realistic encodings' cache folder; then JSON [[script, [args]], ...].
RUN_ALL = """
import contextlib, io, json, runpy, sys, time
sys.path.insert(0, ".")
import benchmarks.realclks
benchmarks.realclks.CACHE = __import__("pathlib").Path(sys.argv[1])
said = {}
for script, args in json.loads(sys.argv[2]):
    path = f"benchmarks/{script}.py"
    out, err, code, t0 = io.StringIO(), io.StringIO(), None, time.perf_counter()
    sys.argv, sys.path[0] = [path, *args], "benchmarks"
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
        except BaseException as e:
            import traceback
            traceback.print_exc(file=err)
            code = repr(e)
    said[script] = [code, out.getvalue(), err.getvalue()[-3000:], time.perf_counter() - t0]
print(json.dumps(said))
"""


def run_all(scripts: list[tuple[str, list[str]]], cache: Path) -> dict[str, str]:
    """Each script's stdout, once every one has exited 0 (or ended without SystemExit)."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_ALL, str(cache), json.dumps(scripts)], cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.splitlines()[-1])
    failed = {s: (code, err) for s, (code, _, err, _) in said.items() if code not in (0, None)}
    assert failed == {}
    print({script: round(seconds, 1) for script, (*_, seconds) in said.items()})  # pytest -s
    return {script: out for script, (_, out, _, _) in said.items()}


def test_the_two_server_grpc_and_audit_log_benchmarks_run(tmp_path: Path) -> None:
    out = run_all(
        [
            ("batch_inputs", ["--pairs", "1000", "--batches", "1"]),
            ("crosspart_memory", ["--records", "200", "200"]),
            ("densearith", ["--records", "20", "--partner-records", "30"]),
            ("erasure_log_scan", ["--entries", "1000", "--erasures", "10", "--repeats", "1",
                                  "--queries", "100"]),
            ("grpcfloor", ["--calls", "1", "--rounds", "1"]),  # 0 CPU ticks: no ratio
            ("twoserver_cost", ["--pairs", "100", "--link-bit-pairs", "128"]),
            ("twoserver_rule_cost", ["--pairs", "100"]),
            ("collision_attack", ["--records", "200", "--known", "0"]),
        ],
        tmp_path,
    )  # fmt: skip
    for script, text in out.items():
        assert text.strip(), script  # each printed its figures
    assert "peak RSS" in out["crosspart_memory"]
    assert "output bits the same: True" in out["densearith"]


def test_the_realistic_encoding_benchmarks_run(tmp_path: Path) -> None:
    """kernelpeak, rulespeed and fallbackspeed read a cached realistic pair (1,000,000 records
    by default), rulescore one of 20,000: `--pair` makes a small one; completion (as rulefloor)
    rule2d's encodings of 500 people; encodespeed checks that
    blindmatch's first CLKs are clkhash's (the default schema's uploads carry a fallback CLK
    after them); recall encodes its routes' schemas (docs/evaluation.md "The recall gap ...");
    lowfloor checks its two paths give the same links."""
    out = run_all(
        [
            ("encodespeed", ["--records", "20", "--repeats", "1"]),
            ("rulespeed", ["--exhaustive", "300", "--plan", "500", "--lsh", "300",
                           "--repeat", "1", "--pair", "500"]),
            ("exhaustive_cache", ["500"]),
            ("kernelpeak", ["--a", "32", "--b", "200", "--repeats", "1", "--anonlink-a", "8",
                            "--pair", "400", "400"]),
            ("rulefloor", ["--seeds", "messy:2103", "--population", "500", "--floors", "0.7",
                           "--cache", str(tmp_path / "rule2d")]),
            ("fallbackspeed", ["--sizes", "300", "--pair", "300"]),
            ("rulescore", ["--pair", "300", "--pairs", "3000", "--repeat", "1", "--pair-scores"]),
            ("completion", ["--seeds", "messy:2103", "--population", "500", "--bridges", "0.85",
                            "--reaches", "0.7", "--cache", str(tmp_path / "rule2d")]),
            # (its routes' schemas: `swap` added the default's own `names` feature again)
            ("recall", ["--seeds", "31", "--population", "1000"]),
            ("lowfloor", ["--records", "300", "--floors", "0.8", "0.6"]),
        ],
        tmp_path / "cache",
    )  # fmt: skip
    assert "the same (first) CLKs from both: True" in out["encodespeed"]
    assert "ratio (rule / one CLK)" in out["rulespeed"]
    assert "same pairs and scores: True" in out["kernelpeak"] or "no AVX-512" in out["kernelpeak"]
    assert out["rulefloor"].strip()
    assert (
        "scores identical: True; pairs LSH found that exhaustive did not: 0" in out["fallbackspeed"]
    )
    assert "| dob-bigrams+swap |" in out["recall"]
    said = out["rulescore"]
    assert said.count("scores identical: True") == said.count("scores identical") >= 1
    assert "us a call of 2" in said  # --pair-scores: pair_scores by each path
    assert "pair_scores at the run's cut-offs" in out["completion"]
    assert "groups and links byte-identical to main's at every floor" in out["lowfloor"]


def test_the_s2_proxy_reaches_s2_restarted_on_its_address_once_reconnected() -> None:
    """benchmarks/grpcproxy.py (twoserver_rerun_project.py --fail-after): S2 killed, then
    started again on its address; the proxy's channel, which saw it go, is in its reconnect
    back-off and refused the plain rerun's first call at once ("Connection refused", the run
    failed) until `reconnect` gave it a fresh channel. S2 here is any server of that
    address: the proxy forwards bytes."""
    from concurrent import futures

    import grpc

    from benchmarks.grpcproxy import proxy
    from tests.portheld import dead_port

    method = "/blindmatch.v1.TwoServerShares/Collect"
    with dead_port() as port:  # (S2's address, kept from the other worker's servers till S2)
        front = proxy(f"127.0.0.1:{port}", lambda name: None)
        channel = grpc.insecure_channel(front.address)
        ask = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as refused:  # S2 down
            ask(b"", timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    s2 = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"collected")
    s2.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        method.split("/")[1], {"Collect": handler}),))  # fmt: skip
    assert s2.add_insecure_port(f"127.0.0.1:{port}") == port
    s2.start()
    try:
        front.reconnect()
        assert ask(b"", timeout=30) == b"collected"
    finally:
        s2.stop(None)
        front.stop(None)
        channel.close()


def refusal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            main: Callable[[], int], *argv: str) -> str:  # fmt: skip
    """What a benchmark's `main` says on stderr as its parser refuses `argv` (exit 2)."""
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv])
    with pytest.raises(SystemExit) as refused:
        main()
    assert refused.value.code == 2
    return capsys.readouterr().err


def test_twoserver_pads_with_decoys_for_the_roles_view_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--pad-to` without `--view roles` ran the attacks on C's view, which know no decoy's
    person: a KeyError on the first decoy (benchmarks/twoserver_attacks.py)."""
    from benchmarks import twoserver

    said = refusal(monkeypatch, capsys, twoserver.main, "--records", "500", "--population",
                   "messy", "--pad-to", "600", "--known", "0")  # fmt: skip
    assert "--pad-to: with --view roles only" in said


def test_standing_ahead_refuses_a_partner_too_small_to_convert_ahead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Below core/partpath.py STANDING_RECORDS a query goes by pairs and C converts nothing
    ahead of it: `--partner-records 2000` ran both queries, then failed on a bare
    AssertionError (benchmarks/twoserver_standing_ahead.py, `made.started == 1`)."""
    from benchmarks import twoserver_standing_ahead

    said = refusal(monkeypatch, capsys, twoserver_standing_ahead.main, "--partner-records", "2000")
    assert "--partner-records: at least 16,000" in said


def test_twoserver_roles_view_with_dummies_ends_at_no_verdict_on_too_few_records(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Too few records for a verdict: the check attacks no view, so there was none to set
    beside the reference's (`--dummies`, `--plan`), C's CLK tags (`--clk-tags`) or the
    decoys' (`--pad-to`): a KeyError after the NO VERDICT (benchmarks/twoserver_roles_check.py)."""
    from benchmarks import twoserver

    monkeypatch.setattr(sys, "argv", ["twoserver.py", "--records", "300", "--view", "roles",
                                      "--dummies", "2", "--clk-tags", "--known", "0"])  # fmt: skip
    assert twoserver.main() == 0
    assert "NO VERDICT: 300 records of member A are too few" in capsys.readouterr().out


def test_the_privacy_benchmark_encodes_every_setting_as_the_schema_loader_reads_it(
    tmp_path: Path,
) -> None:
    """`salt dob:year` salted the default's fallback CLK too, which leaves dob out: encoding
    refused it and benchmarks/privacy.py stopped at its third setting. Then balancing and XOR
    folding were measured beside the fallback CLK, a schema `load_schema` refuses (it hardened
    the loaded schema's JSON past the loader). Each hardened schema is now read back by the
    loader; one it refuses beside the fallback is measured on the first CLK alone, saying why."""
    from benchmarks import privacy
    from blindmatch.client.encoding.encode import encode_csv
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.tools.privacy import population

    export = next(iter(population.write_exports(tmp_path, 1, 60).values()))
    person, first_only = load_schema(privacy.PERSON), load_schema(privacy.PERSON_FIRST_ONLY)
    folder = tmp_path / "schemas"
    folder.mkdir()
    for label, hardening in privacy.SETTINGS:
        schema, refused = privacy.measured(person, first_only, hardening, folder)
        assert load_schema(schema.path).raw == schema.raw, label  # a file the loader reads
        done = encode_csv(export.csv, schema, load_mapping(export.mapping, schema), b"k" * 32)
        assert done.ids, label
        loader_refuses = hardening.salt_field == "dob" or hardening.balance or hardening.xor_folds
        assert (schema.fallback == ()) == bool(loader_refuses) == bool(refused), label
        assert "blindmatch.fallback" in refused or not refused, label
