"""`blindmatch watch`: be told, as it happens, when a partner later holds a watched person.

The people are given as `query` takes them (realtime.py `person_arguments`); the watch is
`MatcherClient.watch` in either mode (CLKs in a CLK project, a `SharedUpload` in a two-server
one; docs/realtime.md, "Watching for later matches"). The stream is followed on a thread of its
own, so that the main thread can stop it at Ctrl-C (or SIGTERM), after --count events or at
--timeout: closing the connection ends the watch at the matcher (and, in a two-server project,
has S1 and S2 forget the watched records).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from blindmatch.cli.errors import Terminated, ends_at_sigterm
from blindmatch.cli.options import (
    Subcommands,
    at_least,
    command,
    connect,
    connection_options,
    member_options,
    member_token,
)
from blindmatch.cli.realtime import QUOTE, encode_query, person_arguments, shared_records
from blindmatch.client.errors import InputError, MatcherError, UnavailableError
from blindmatch.matcher.domain import counted

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from blindmatch.client.encoding.encode import EncodeResult
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.model import WatchEvent

CSV_HEADER = ["time", "record_id", "partner", "partner_ref", "score"]
POLL_SECONDS = 0.25  # how often the main thread looks up from waiting (Ctrl-C, --timeout)


@dataclass(frozen=True)
class Received:
    """What the stream's thread hands the main thread: the watch is open (`ready`), an
    event, the stream's failure, or its end (all None)."""

    ready: bool = False
    event: WatchEvent | None = None
    error: BaseException | None = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _open_out(path: Path) -> tuple[IO[str], Any]:
    """--out, opened for appending before anything is sent: a new file gets the header, an
    existing one must have it (another command's CSV is not appended to)."""
    try:
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            with open(path, encoding="utf-8", newline="") as fh:
                first = next(csv.reader(fh), [])
            if first != CSV_HEADER:
                raise InputError(
                    f"--out {path}: exists with another header ({','.join(first)}); a watch "
                    f"appends to a CSV headed {','.join(CSV_HEADER)} or a new file"
                )
        fh = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed by the caller)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"--out {path}: cannot write it ({why})") from None
    writer = csv.writer(fh)
    if fresh:
        writer.writerow(CSV_HEADER)
        fh.flush()
    return fh, writer


def _stream(
    client: MatcherClient, args: argparse.Namespace, result: EncodeResult, schema: Any,
    secret: bytes, on_ready: Callable[[], None],
) -> Iterator[WatchEvent]:  # fmt: skip
    """The watch's events, by the project's mode (asked first: a two-server project's
    matcher never receives a CLK, as for `query`)."""
    if client.describe(args.project, settings_only=True).mode == "two-server":
        return client.watch(
            args.project, shared_records(result, schema, secret),
            clk_bits=result.clk_bits, fingerprint=result.fingerprint, purpose=args.purpose,
            schema_digest=result.schema_digest, rule=result.rule, on_ready=on_ready,
            on_notice=_notice, allow_band_keys=args.allow_band_keys,
        )  # fmt: skip
    return client.watch(
        args.project, result.clks, clk_bits=result.clk_bits, fingerprint=result.fingerprint,
        purpose=args.purpose, fallback_bits=result.fallback_bits, rule=result.rule,
        on_ready=on_ready,
    )  # fmt: skip


def _notice(message: str) -> None:
    """A two-server watch's notice (its band keys sent to S1, a catch-up made or failed):
    on standard error even with --quiet, as it says what S1 was given or what was missed."""
    print(f"{_now()}  {message}", file=sys.stderr, flush=True)


def _follow(start: Callable[[], Iterator[WatchEvent]], inbox: queue.Queue[Received]) -> None:
    """The stream's thread: everything it receives, then how it ended, into `inbox`."""
    try:
        for event in start():
            inbox.put(Received(event=event))
        inbox.put(Received())
    except BaseException as exc:
        inbox.put(Received(error=exc))


class Printer:
    """Each event, as it arrives: a line (or JSON line) on standard output, and rows
    appended to --out, flushed at once."""

    def __init__(self, args: argparse.Namespace, labels: list[str]) -> None:
        self.json, self.labels = args.json, labels
        self.out = _open_out(args.out) if args.out else None
        self.quoted = bool(args.quiet)  # -q: the note on bmr- refs never said
        self.quote = QUOTE.format(project=args.project)

    def __call__(self, e: WatchEvent) -> None:
        at = _now()
        label = self.labels[e.index] if e.index is not None else None
        refs = list(e.match.refs) if e.match else []
        scores = list(e.match.scores) if e.match else []
        if self.out:
            fh, writer = self.out
            shown = [f"{s:.4f}" for s in scores] if scores else [""] * len(refs)
            rows = [[at, label or "", e.partner, ref, shown[i]] for i, ref in enumerate(refs)]
            rows = rows or [[at, label or "", e.partner, "", ""]]
            writer.writerows(rows)
            fh.flush()
        if self.json:
            line = {"time": at, "record_id": label, "partner": e.partner, "refs": refs,
                    "scores": scores} | ({"caught_up": True} if e.caught_up else {})  # fmt: skip
            print(json.dumps(line), flush=True)
            return
        # Found by the catch-up query of a re-opened two-server watch (said on stderr).
        caught = " (caught up by a query)" if e.caught_up else ""
        if label is None:
            print(f"{at}  {e.partner} now holds one more of the watched records (it allows "
                  f"counts only){caught}", flush=True)  # fmt: skip
            return
        print(f"{at}  {label}: now held by {e.partner}{caught}", flush=True)
        for i, ref in enumerate(refs):
            score = f" (score {scores[i]:.4f})" if scores else ""
            print(f"      {e.partner} ref {ref}{score}", flush=True)
        if not self.quoted and any(ref.startswith("bmr-") for ref in refs):
            self.quoted = True
            print(f"Each bmr- ref is a request reference: {self.quote}", file=sys.stderr)

    def close(self) -> None:
        if self.out:
            self.out[0].close()


def _ended(error: BaseException | None, seen: int) -> BaseException:
    """The matcher ended the watch (it was not asked to): why, as the same kind of error, so
    the exit status is the one that kind maps to."""
    told = f"after {counted(seen, 'event')}"
    if error is None:
        return UnavailableError(
            f"the matcher ended the watch {told} without saying why (it may have stopped); "
            "run `blindmatch watch` again to go on watching"
        )
    # An UNAVAILABLE gRPC made up (nothing answered) reads "cannot reach ..."
    # (client.remote.channel.translate_errors); one the matcher answered (S1, S2 or a
    # look-up server down behind it) is said as it is.
    if isinstance(error, UnavailableError) and str(error).startswith("cannot reach "):
        return UnavailableError(
            f"the watch ended {told}: {error} (the matcher stopped, or the connection was "
            "lost; it held the watch only while connected: run `blindmatch watch` again "
            "once it is back)"
        )
    if isinstance(error, MatcherError):
        return type(error)(f"the watch ended {told}: {error}")
    return error


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


@ends_at_sigterm
def cmd_watch(args: argparse.Namespace) -> int:
    return _watch(args)


def _watch(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.person import usable_fields

    if not args.purpose or not args.purpose.strip():
        raise InputError("--purpose is required: say why you are asking (a case reference)")
    # Everything local is checked before anything is sent.
    result, labels, schema, secret = encode_query(args, "watch")
    token = member_token(args)
    printer = Printer(args, labels)
    inbox: queue.Queue[Received] = queue.Queue()
    seen, opened, why = 0, False, ""
    try:
        with connect(args, token) as client:

            def start() -> Iterator[WatchEvent]:
                ready = lambda: inbox.put(Received(ready=True))  # noqa: E731
                return _stream(client, args, result, schema, secret, ready)

            threading.Thread(target=_follow, args=(start, inbox), daemon=True).start()
            deadline = time.monotonic() + args.timeout if args.timeout else None
            try:
                while args.count is None or seen < args.count:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        why = f"--timeout {args.timeout:g} s reached"
                        break
                    try:
                        got = inbox.get(timeout=min(POLL_SECONDS, left or POLL_SECONDS))
                    except queue.Empty:
                        continue
                    if got.ready:
                        opened = True
                        _say(args, _watching(args, labels, usable_fields(result)))
                    elif got.event is not None:
                        seen += 1
                        try:
                            printer(got.event)
                        except BrokenPipeError:  # `watch ... | head -1`: the reader is done
                            _quiet_stdout()
                            why = "standard output closed"
                            break
                    elif opened or got.error is None:
                        raise _ended(got.error, seen)
                    else:  # refused before it opened: the refusal, as `query` says one
                        raise got.error
                else:
                    why = f"{counted(seen, 'event')}, as --count asked"
            except KeyboardInterrupt as stop:
                if not opened:
                    raise
                why = "stopped (SIGTERM)" if isinstance(stop, Terminated) else "stopped (Ctrl-C)"
            # Leaving `connect` closes the connection: the stream ends at the matcher, which
            # drops the watch (and has S1 and S2 forget its records).
    finally:
        printer.close()
    _say(args, f"Watch closed: {why}; {counted(seen, 'event')} received.")
    return 0


def _quiet_stdout() -> None:
    """Standard output's reader is gone: what is still buffered for it, and anything printed
    later, goes nowhere (rather than a BrokenPipeError at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _watching(args: argparse.Namespace, labels: list[str], usable: list[Any]) -> str:
    lines = [
        f"Watching {counted(len(labels), 'record')} in {args.project} for partners' later matches "
        "(Ctrl-C to stop):"
    ]
    lines += [f"  {label} ({use.describe()})" for label, use in zip(labels, usable, strict=True)]
    return "\n".join(lines)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds above 0")
    return value


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "watch",
        help="be told as it happens when a partner later holds a person (or each person of "
        "a small CSV)",
        description="Watch for a person given as `query` takes one (options, --person-file, "
        "or each person of a small CSV with --mapping): the matcher tells this member, as it "
        "happens, when a partner later indexes a matching record (in a two-server project: "
        "later uploads one), within the same disclosure levels as a query, each event a line "
        "on standard output (--json: a JSON line; --out: CSV rows appended and flushed). It "
        "stays open until Ctrl-C (or SIGTERM), --count events or --timeout, and then closes the "
        "watch at the matcher. Only where the operator allows watching (`admin query-limits "
        "--allow-watch`); the watch is logged with its --purpose, and each event too. If the "
        "matcher ends the watch (a revoked token, erasure, the matcher stopping, in a "
        "two-server project a comparison that could not be made) it says why and exits "
        "non-zero.",
        example=[
            "blindmatch watch --project burglary --schema person-uk.json --secret-file "
            "linkage.secret --token-file north.token --purpose 'case 24/118' --person-file "
            "- < grace.txt",
            "blindmatch watch people.csv --mapping north.toml --project burglary --schema "
            "person-uk.json --secret-file linkage.secret --purpose 'case 24/118' --json "
            "--out hits.csv --count 1 --timeout 86400",
        ],
        handler=cmd_watch,
        parents=[connection_options(), member_options()],
    )
    person_arguments(p, "watch")
    p.add_argument("--count", type=at_least(1), metavar="N", help="close the watch after N events")
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="close the watch after SECONDS (exit 0, as at Ctrl-C)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="also append each event to FILE as time,record_id,partner,partner_ref,score CSV "
        "rows, flushed as it arrives",
    )
    p.add_argument("--json", action="store_true", help="print each event as a JSON line")
