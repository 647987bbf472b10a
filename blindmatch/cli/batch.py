"""`blindmatch upload`, `run`, `results` and `report`: a member's batch flow with the matcher."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import (
    Subcommands,
    command,
    connect,
    connection_options,
    encoded_option,
    member_options,
    member_token,
    progress_wanted,
)
from blindmatch.cli.plotconfig import plots
from blindmatch.client.errors import BlindmatchError, InputError, MatcherError
from blindmatch.matcher.domain import counted

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from blindmatch.client.encoding.encoded import Encoded
    from blindmatch.client.progress import Progress
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.model import ResultHit, Results, RunProgress


def cmd_upload(args: argparse.Namespace) -> int:
    from blindmatch.cli.projectmode import clk_refusal
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.encoding.sharing import SHARED_FOLDER
    from blindmatch.client.remote.convert import content_upload_id

    encoded = read_encoded(args.encoded)
    with connect(args, member_token(args)) as client, _emptying(args, encoded):
        # A folder with a two-server upload: the project's mode decides what goes where
        # (asked of its settings, storing nothing). Without one, a two-server
        # project refuses the CLKs, saying to encode with --two-server.
        shared = (args.encoded / SHARED_FOLDER).is_dir()
        if shared and _two_server_upload(args, client, encoded):
            return 0
        if shared and not args.clk:  # its CLKs were not meant for a matcher (issue 18)
            raise InputError(clk_refusal(args.encoded, args.project, "upload"))
        if not shared:  # asked first: a two-server project would refuse the CLKs once sent
            _refuse_clks_where_two_server(client, args)
        if args.s1 or args.s2:
            raise InputError(
                f"--s1/--s2: only for a project in two-server mode ({args.project} is not), "
                "with a folder encoded --two-server"
            )
        receipt = client.upload(
            args.project,
            encoded,
            progress=progress_wanted(args),
            upload_id=content_upload_id(args.project, encoded),  # the same command: idempotent
            allow_empty=args.allow_empty,
        )
    if args.quiet:  # nothing, as `encode -q`: exit 0 says it is stored (errors: stderr)
        return 0
    again = "; the matcher had it already, nothing was stored twice" if receipt.replayed else ""
    print(
        f"Uploaded {receipt.record_count} encodings to {args.project} "
        f"(upload {receipt.upload_id}{again})."
    )
    return 0


@contextmanager
def _emptying(args: argparse.Namespace, encoded: Encoded) -> Iterator[None]:
    """The matcher's refusal of a folder of no records that would replace this member's
    upload of some (without --allow-empty; nothing sent, nothing replaced), said as bad local
    input naming the folder and the records (the matcher's trailing metadata, not its text)."""
    from blindmatch.protos.wire import REPLACES_RECORDS_METADATA

    try:
        yield
    except MatcherError as exc:
        replaced = exc.trailing.get(REPLACES_RECORDS_METADATA)
        if replaced is None or encoded.record_count:
            raise
        n = int(replaced)
        raise InputError(
            f"{args.encoded} holds no records: uploading it would replace your current upload "
            f"to {args.project} ({counted(n, 'record')}) with none. Nothing was "
            "sent or replaced. Pass --allow-empty to replace it with no records (or check that "
            "you encoded the right export)"
        ) from None


def _refuse_clks_where_two_server(client: MatcherClient, args: argparse.Namespace) -> None:
    """A folder without a two-server upload, for a project in two-server mode: refused here,
    before any CLK leaves (the matcher refuses them at the upload's header, by when the
    stream has begun). Its settings alone are asked: nothing audited (issue 18)."""
    if client.describe(args.project, settings_only=True).mode != "two-server":
        return
    raise InputError(
        f"project {args.project!r} runs in two-server mode: the matcher never takes its "
        f"members' CLKs, and {args.encoded} was encoded without --two-server. Nothing was "
        "sent. Encode with `blindmatch encode ... --two-server` (the same export, schema, "
        "secret and mapping) and upload that folder: its shares go to S1 and S2, only how "
        "many records to the matcher"
    )


def _two_server_upload(args: argparse.Namespace, client: MatcherClient, encoded: Encoded) -> bool:
    """In a project in two-server mode: the shares to S1 and S2, how many records to the
    matcher, True; False (nothing sent) for a CLK project."""
    from blindmatch.client.encoding.sharedfiles import open_shared
    from blindmatch.client.encoding.sharing import SHARED_FOLDER
    from blindmatch.client.remote.twoserver import project_upload

    # Its settings alone (not audited): before 2026-12-07 a ticket was asked to learn the
    # mode, and where the upload's own ticket was then refused (another secret's folder)
    # that first one was left as an upload started and never finished.
    if client.describe(args.project, settings_only=True).mode != "two-server":
        return False
    # The schema's rule goes with the shares to S1 and S2 and is recorded with the upload:
    # a run applies it on the shares of both CLKs (matcher/core/gmwrule.py). The files are
    # read a part at a time as the parts go (S1's file is about 42 kB a record since
    # 2026-12-06, 140-220 before; sealed as it goes), with the megabytes sent on stderr.
    say = None if args.quiet else print
    with open_shared(args.encoded / SHARED_FOLDER) as upload:
        sent = project_upload(client, args.project, encoded, upload, s1=args.s1 or "",
                              s2=args.s2 or "", say=say, allow_empty=args.allow_empty,
                              progress=progress_wanted(args))  # fmt: skip
    if args.quiet:
        return True
    print(
        f"Uploaded {sent.receipt.record_count} records to {args.project} in two-server mode: "
        f"shares to S1 ({sent.s1}) and S2 ({sent.s2}), only how many to the matcher (upload "
        f"{sent.receipt.upload_id})."
    )
    return True


def cmd_run(args: argparse.Namespace) -> int:
    from blindmatch.client.progress import Progress

    with connect(args, member_token(args)) as client:
        started = client.start_run(args.project)
        if not args.quiet:
            print(f"Run {started.run_id} {started.state}.", file=sys.stderr)
        # Work units differ by method (pairs, LSH bands, field-level steps): show shares.
        # (tqdm's {desc} ends in ": " already; "{desc}: " drew "comparing: :  50%".)
        shares = "{desc}{percentage:3.0f}% |{bar}| {elapsed}<{remaining}"
        bar = Progress("", prefix="run", counts=False, enabled=progress_wanted(args),
                       bar_format=shares)  # fmt: skip
        try:
            final = _follow(bar, client.watch_run(args.project, started.run_id)) or started
        except KeyboardInterrupt:  # Ctrl-C stops the watching, not the run
            bar.close()
            if not args.quiet:
                print(f"Run {started.run_id} goes on at the matcher: `blindmatch run --project "
                      f"{args.project}` follows it again, and `blindmatch results` fetches "
                      "it once it is done.", file=sys.stderr)  # fmt: skip
            raise
        finally:
            bar.close()
    if final.state == "failed":
        raise BlindmatchError(f"run {final.run_id} failed: {final.message}")
    if final.state != "done":
        raise BlindmatchError(f"lost track of run {final.run_id} ({final.state})")
    if args.quiet:  # nothing, as `upload -q`: exit 0 says it is done (`results` shows it)
        return 0
    if final.groups:  # the member's own shared records (never the run-wide total)
        print(f"Run {final.run_id} done: {final.groups} of your records are held by a partner.")
    else:
        print(f"Run {final.run_id} done; `blindmatch results` shows what you share.")
    return 0


# How long `run` waits for a status before it shows that the run goes on (`Progress.still`).
PAUSE_S = 5.0


def _with_pauses(statuses: Iterable[RunProgress]) -> Iterator[RunProgress | None]:
    """`statuses` as they come, and None after each `PAUSE_S` seconds without one, read on a
    thread. A member's watch says `running` once and then nothing until the run ends (its
    stages' times told it what others share: srvleft), so without these `run` showed no sign
    of life for the whole run, however long."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue()

    def read() -> None:
        try:
            for status in statuses:
                box.put(("status", status))
            box.put(("end", None))
        except BaseException as exc:  # raised where `run` follows the run
            box.put(("error", exc))

    threading.Thread(target=read, name="run-watch", daemon=True).start()
    while True:
        try:
            kind, item = box.get(timeout=PAUSE_S)
        except queue.Empty:
            yield None
            continue
        if kind == "end":
            return
        if kind == "error":
            raise item
        yield item


def _follow(bar: Progress, statuses: Iterable[RunProgress]) -> RunProgress | None:
    """Each status of the run on `bar`; the last. The watch sees the run's progress at its
    looks only, so a counted stage the run has moved on from (or ended in: done) is shown
    complete: its last count seen may be short of it (a two-server run's last batches and
    its solving between two looks ended on "comparing: 75% after 0s"). While no status
    comes, the bar shows the run goes on (`Progress.still`)."""
    final, shown, counted = None, "", 0
    for status in _with_pauses(statuses):
        if status is None:
            if shown:
                bar.still()
            continue
        final = status
        ended = status.state == "done"
        if counted and (ended or status.stage not in ("", shown)):
            bar.moveto(counted, counted)
            counted = 0
        if not status.stage or (ended and status.stage == shown):
            continue
        comparing = status.stage in ("compare", "fallback") and status.work_total and not ended
        if status.stage != shown:
            bar.stage(_stage_label(status), status.work_total if comparing else None)
            shown = status.stage
        else:
            bar.describe(_stage_label(status))
        if comparing:
            bar.moveto(status.work_done, status.work_total)
            counted = status.work_total
    return final


def _stage_label(status: RunProgress) -> str:
    """What a run's stage is called on its bar and in its lines."""
    if status.stage == "fallback":
        return "comparing the fallback CLKs of records lacking a field"
    if status.stage == "score":
        return "scoring the candidate pairs on both CLKs"
    if status.stage == "compare" and status.tasks_total:
        return f"comparing ({status.tasks_done}/{status.tasks_total} tasks)"
    return "comparing" if status.stage == "compare" else status.stage


@ends_at_sigterm  # the CSV half-written beside --out (client/files.py) deleted
def cmd_results(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.files import check_writable, write_csv
    from blindmatch.client.remote.twoserver import folder_sha256
    from blindmatch.client.results import HEADERS, result_rows

    encoded = read_encoded(args.encoded, verify=False)
    check_writable(args.out)  # before the fetch, which is audited

    def write(results: Results, hits: Iterator[ResultHit]) -> tuple[Results, int]:
        also = folder_sha256(encoded) if results.upload_sha256 != encoded.sha256 else ""
        joined = result_rows(results, encoded, also, hits)  # (the upload checked here)
        return results, write_csv(args.out, HEADERS[results.disclosure], joined)

    # Each hit is joined to its id and written as it arrives, to a temporary file renamed
    # over --out at the end (client/files.py `write_csv`): a dropped stream leaves no file
    # and is fetched again from the start (`results_to`). Before refcarry (2026-12-08) every
    # hit was held in memory first.
    with connect(args, member_token(args)) as client:
        results, rows = client.results_to(args.project, args.purpose or "", write)

    def limited(partner: str) -> str:
        level = results.level_of(partner)
        return "" if level == results.disclosure else f" ({level} only, as {partner} consents)"

    counts = ", ".join(f"{p}: {n}{limited(p)}" for p, n in results.counts.items()) or "none"
    # Said with -q too: a partner that allows counts only is in no row of --out, only here.
    print(
        f"Run {results.run_id} ({results.disclosure}): records shared with partners - {counts}. "
        f"Wrote {counted(rows, 'row')} to {args.out}."
    )
    return 0


@ends_at_sigterm  # the page half-written beside --out (and matplotlib's config folder) deleted
@plots
def cmd_report(args: argparse.Namespace) -> int:
    from blindmatch.client.files import check_writable
    from blindmatch.client.tools.report import gather_report
    from blindmatch.client.tools.report_html import write_report

    check_writable(args.out)  # before the results are fetched, which is audited
    with connect(args, member_token(args)) as client:
        report = gather_report(
            client,
            args.project,
            args.encoded,
            purpose=args.purpose or "",
            truth=args.truth,
            include_records=not args.no_records,
        )
    write_report(args.out, report)
    if not args.quiet:
        print(
            f"Wrote {args.out}: run {report.run_id} ({report.learnt}), "
            f"{counted(len(report.partners), 'partner')}, "
            f"{counted(len(report.audit), 'audit entry', 'audit entries')}."
        )
    return 0


def register(sub: Subcommands) -> None:
    parents = [connection_options(), member_options()]
    # What fetching results needs, for `results` and `report` alike.
    fetch = argparse.ArgumentParser(add_help=False)
    encoded_option(fetch)
    fetch.add_argument(
        "--purpose",
        help="why you are asking (a case reference); written to the audit log, and required "
        "by projects created with --require-purpose",
    )
    p = command(
        sub,
        "upload",
        help="upload encodings to the matcher",
        description="Upload an ENCODED folder's CLKs (never its local ids) to the matcher; "
        "it replaces this member's earlier upload (with a folder of no records only given "
        "--allow-empty). A dropped connection is retried with the "
        "same upload id, so nothing is stored twice. In a project in two-server mode the CLKs "
        "never go to the matcher: the folder's two-server upload (`encode --two-server`) goes "
        "as XOR shares to S1 and S2 (where the matcher says they are) under a ticket the "
        "matcher signs, and the matcher gets only how many records there are. Such a folder "
        "goes to a CLK project only with --clk.",
        example="blindmatch upload north.encoded --project burglary --token-file north.token",
        handler=cmd_upload,
        parents=parents,
    )
    p.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    p.add_argument(
        "--s1",
        metavar="HOST:PORT",
        help="two-server projects: S1's address, in place of the one the matcher gives "
        "(`project show` lists it; a proxy)",
    )
    p.add_argument("--s2", metavar="HOST:PORT", help="two-server projects: S2's address, likewise")
    p.add_argument(
        "--clk",
        action="store_true",
        help="a folder encoded --two-server: send its CLKs if the project is a CLK project "
        "(without --clk refused, nothing sent: its matcher would hold them; docs/privacy.md)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="upload a folder of no records (`encode --allow-empty`) even where it replaces "
        "your current upload of some (without it refused, nothing sent or replaced)",
    )

    command(
        sub,
        "run",
        help="match all members' uploads, showing progress",
        description="Start matching every member's current upload (or follow the run already "
        "going) and wait, showing progress, until it is done.",
        example="blindmatch run --project burglary --token-file north.token",
        handler=cmd_run,
        parents=parents,
    )

    p = command(
        sub,
        "results",
        help="fetch results and join them to local ids",
        description="Fetch what the project's disclosure level and the partners' consent let "
        "this member learn, join it to the local ids of the ENCODED folder that was uploaded, "
        "and write a CSV (record_id,partner for hits).",
        example="blindmatch results --project burglary --token-file north.token "
        "--encoded north.encoded --out hits.csv",
        handler=cmd_results,
        parents=[*parents, fetch],
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        required=True,
        type=Path,
        help="CSV to write (e.g. hits.csv); an existing file is replaced",
    )

    p = command(
        sub,
        "report",
        help="write one self-contained HTML page of your results, data quality and audit",
        description="Fetch your results (an audited disclosure), the project's settings and "
        "your audit export, and write one HTML page that needs nothing else to open: overlap "
        "per partner with a chart, per-record results where your level allows, the encode "
        "report of ENCODED, the audit summary and, at the scores level, the evaluation. "
        "See docs/report.md.",
        example="blindmatch report --project burglary --token-file north.token --encoded "
        "north.encoded --out report.html --purpose 'OP-2291'",
        handler=cmd_report,
        parents=[*parents, fetch],
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        required=True,
        type=Path,
        help="HTML file to write; an existing file is replaced",
    )
    p.add_argument(
        "--truth",
        metavar="FILE",
        type=Path,
        help="CSV member,record_id,entity_id (as for `evaluate`): add precision, recall and, "
        "at the scores level, the evaluation plots",
    )
    p.add_argument(
        "--no-records",
        action="store_true",
        help="leave the per-record rows (your record ids) out of the page",
    )
