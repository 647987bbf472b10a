"""The `blindmatch` command line: parse options, call the library, print results.

Every `BlindmatchError` becomes `Error: <message>` on stderr and its exit code:
2 for bad local input or usage, 3 when the matcher refuses, 4 when it cannot
be reached, 1 for anything else (a failed run, say). Never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from blindmatch.client import daskopts, tls
from blindmatch.client.api import (
    BLOCKINGS,
    LEVELS,
    IndexSummary,
    MatcherClient,
    RunProgress,
    content_upload_id,
)
from blindmatch.client.encode import ON_DUPLICATE, EncodeResult, encode_csv, read_secret
from blindmatch.client.encoded import read_encoded, write_encoded
from blindmatch.client.errors import BlindmatchError, InputError
from blindmatch.client.mapping import load_mapping
from blindmatch.client.results import HEADERS, join_results, write_csv
from blindmatch.client.schema import load_schema
from blindmatch.matcher.domain import DEFAULT_STREAMS_PER_MEMBER

DEFAULT_SERVER = "127.0.0.1:50051"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _progress_wanted(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _client(args: argparse.Namespace, token: str | None) -> MatcherClient:
    credentials = tls.channel_credentials(
        ca_cert=args.ca_cert, client_cert=args.client_cert, client_key=args.client_key
    )

    def say_retrying(message: str) -> None:
        print(f"Warning: {message}", file=sys.stderr)

    return MatcherClient(args.server, token, credentials=credentials, on_retry=say_retrying)


def _member_token(args: argparse.Namespace) -> str:
    token = args.token or _env("BLINDMATCH_TOKEN")
    if not token:
        raise InputError("no member token: pass --token or set BLINDMATCH_TOKEN")
    return token


def _admin_token() -> str:
    token = _env("BLINDMATCH_ADMIN_TOKEN")
    if not token:
        raise InputError("BLINDMATCH_ADMIN_TOKEN is not set; it holds the operator's token")
    return token


_DURATION = re.compile(r"^(\d+)\s*([hdwy])$")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_expiry(text: str, now: float | None = None) -> int:
    """`--expires-in`: a duration (12h, 90d, 8w, 1y) or a UTC date (2026-12-31) -> unix time."""
    now = time.time() if now is None else now
    text = text.strip().lower()
    if m := _DURATION.match(text):
        amount = int(m.group(1))
        if amount < 1:
            raise InputError(f"--expires-in {text}: must be at least 1{m.group(2)}")
        return int(now + amount * _UNIT_SECONDS[m.group(2)])
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InputError(
            f"--expires-in {text!r}: give a duration such as 90d, 12h, 8w or 1y, "
            "or a date such as 2026-12-31"
        ) from None
    expires = int(day.timestamp())
    if expires <= now:
        raise InputError(f"--expires-in {text}: that date has passed")
    return expires


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))


# -- commands -----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from blindmatch.matcher.errors import StartupRefused
    from blindmatch.matcher.server import create_server, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    credentials = tls.server_credentials(
        cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca
    )
    tls.check_listen_address(args.listen, secure=credentials is not None, allow=args.insecure)
    executor = daskopts.executor(args)
    admin = _env("BLINDMATCH_ADMIN_TOKEN")
    if admin is None:
        admin = "bm_admin_" + secrets.token_urlsafe(24)
        print(
            "BLINDMATCH_ADMIN_TOKEN is not set; the operator token for this run is:\n"
            f"  {admin}\nSet BLINDMATCH_ADMIN_TOKEN to keep one across restarts.",
            file=sys.stderr,
        )
    try:
        running = create_server(
            args.listen,
            args.data_dir,
            admin,
            credentials=credentials,
            workers=args.workers,
            lookup_threads=args.lookup_threads,
            streams_per_member=args.max_streams_per_member,
            min_free_bytes=int(args.min_free_mb * 1024 * 1024),
            audit_key_file=args.audit_key,
            executor=executor,
        )
    except StartupRefused as exc:  # a damaged database, a missing audit key: say how to recover
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    host = args.listen.rsplit(":", 1)[0]

    def announce() -> None:
        print(
            f"blindmatch matcher listening on {host}:{running.port} (data: {args.data_dir})",
            file=sys.stderr,
            flush=True,
        )

    serve_forever(running, ready=announce)
    return 0


def cmd_project_create(args: argparse.Namespace) -> int:
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    expires = parse_expiry(args.expires_in) if args.expires_in else 0
    with _client(args, _admin_token()) as client:
        created = client.create_project(
            args.name,
            members,
            disclosure=args.disclose,
            threshold=args.threshold or 0.0,
            blocking=args.blocking,
            require_purpose=args.require_purpose,
            expires_unix=expires,
        )
    if args.json:
        print(json.dumps({"project": created.project, "tokens": created.tokens}))
        return 0
    purpose = "; results need --purpose" if created.require_purpose else ""
    print(
        f"Project {created.project} created (disclosure: {created.disclosure}, "
        f"threshold: {created.threshold}, blocking: {created.blocking}; "
        f"data deleted at {_when(created.expires_unix)}{purpose})."
    )
    print("Member tokens (shown once; give each member only its own):")
    for member, token in created.tokens.items():
        print(f"  {member}: {token}")
    return 0


def cmd_project_rotate_token(args: argparse.Namespace) -> int:
    with _client(args, _admin_token()) as client:
        token = client.rotate_token(args.name, args.member)
    if args.json:
        print(json.dumps({"project": args.name, "member": args.member, "token": token}))
        return 0
    print(f"New token for {args.member} in {args.name} (shown once; the old one no longer works):")
    print(f"  {token}")
    return 0


def cmd_project_revoke_token(args: argparse.Namespace) -> int:
    with _client(args, _admin_token()) as client:
        client.revoke_token(args.name, args.member)
    print(
        f"Revoked {args.member}'s token in {args.name}. Its data stays until it expires or is "
        f"erased; `blindmatch project rotate-token {args.name} --member {args.member}` issues "
        "a new token."
    )
    return 0


def cmd_project_show(args: argparse.Namespace) -> int:
    with _client(args, _member_token(args)) as client:
        info = client.describe(args.name)
    names = {v: k for k, v in LEVELS.items()}
    level = names[info.disclosure]
    print(
        f"Project {info.project} (you are {info.member}; "
        f"disclosure {level}, threshold {info.threshold})"
    )
    purpose = "; results need --purpose" if info.require_purpose else ""
    print(f"  data deleted at {_when(info.expires_unix)}{purpose}")
    for m in info.members:
        state = f"{m.record_count} records uploaded" if m.uploaded else "not uploaded"
        consent = f"; consents to {names[m.consent]}" if m.consent else ""
        print(f"  {m.name}: {state}{consent}")
    if info.HasField("latest_run"):
        run = RunProgress.from_pb(info.latest_run)
        print(f"  latest run {run.run_id}: {run.state}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from blindmatch.client.sharedsecret import read_checked

    schema = load_schema(args.schema)
    mapping = load_mapping(args.mapping, schema)
    secret, weak = read_checked(args.secret_file, args.allow_weak_secret)
    result = encode_csv(
        args.data,
        schema,
        mapping,
        secret,
        progress=_progress_wanted(args),
        on_duplicate_id=args.on_duplicate_id,
        allow_empty=args.allow_empty,
    )
    if weak:
        result.report.warnings.insert(0, weak)
    write_encoded(
        args.out,
        clks=result.clks,
        clk_bits=result.clk_bits,
        fingerprint=result.fingerprint,
        ids=result.ids,
        report=result.report.to_dict(),
        field_bits=result.field_bits,
        fallback_bits=result.fallback_bits,
    )
    if not args.quiet:
        print(result.report.render())
        print(f"Wrote {args.out} (upload {args.out}/clks.bin; local ids stay in {args.out}/local/)")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    encoded = read_encoded(args.encoded)
    with _client(args, _member_token(args)) as client:
        reply = client.upload(
            args.project,
            encoded,
            progress=_progress_wanted(args),
            upload_id=content_upload_id(args.project, encoded),  # the same command: idempotent
        )
    again = "; the matcher had it already, nothing was stored twice" if reply.replayed else ""
    print(
        f"Uploaded {reply.record_count} encodings to {args.project} "
        f"(upload {reply.upload_id}{again})."
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    with _client(args, _member_token(args)) as client:
        started = client.start_run(args.project)
        print(f"Run {started.run_id} {started.state}.", file=sys.stderr)
        bar = tqdm(
            total=0,
            file=sys.stderr,
            # Work units differ by method (pairs, LSH bands, field-level steps): show shares.
            bar_format="{desc}: {percentage:3.0f}% |{bar}| {elapsed}<{remaining}",
            disable=not _progress_wanted(args),
            leave=False,
        )
        final = started
        try:
            for status in client.watch_run(args.project, started.run_id):
                final = status
                if status.stage == "compare" and status.work_total:
                    bar.total = status.work_total
                    bar.n = status.work_done
                    tasks = f"{status.tasks_done}/{status.tasks_total} tasks"
                    bar.set_description(
                        f"comparing ({tasks})" if status.tasks_total else "comparing"
                    )
                    bar.refresh()
                elif status.stage:
                    bar.set_description(status.stage)
        finally:
            bar.close()
    if final.state == "failed":
        print(f"Error: run {final.run_id} failed: {final.message}", file=sys.stderr)
        return 1
    if final.state != "done":
        print(f"Error: lost track of run {final.run_id} ({final.state})", file=sys.stderr)
        return 1
    print(f"Run {final.run_id} done: {final.groups} shared subjects found.")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    encoded = read_encoded(args.encoded, verify=False)
    with _client(args, _member_token(args)) as client:
        results = client.results(args.project, purpose=args.purpose or "")
    rows = join_results(results, encoded)
    write_csv(args.out, HEADERS[results.disclosure], rows)

    def limited(partner: str) -> str:
        level = results.level_of(partner)
        return "" if level == results.disclosure else f" ({level} only, as {partner} consents)"

    counts = ", ".join(f"{p}: {n}{limited(p)}" for p, n in results.counts.items()) or "none"
    print(
        f"Run {results.run_id} ({results.disclosure}): records shared with partners - {counts}. "
        f"Wrote {len(rows)} row(s) to {args.out}."
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from blindmatch.client.report import gather_report, write_report

    with _client(args, _member_token(args)) as client:
        report = gather_report(
            client,
            args.project,
            args.encoded,
            purpose=args.purpose or "",
            truth=args.truth,
            include_records=not args.no_records,
        )
    write_report(args.out, report)
    print(
        f"Wrote {args.out}: run {report.run_id} ({report.learnt}), "
        f"{len(report.partners)} partner(s), {len(report.audit)} audit entries."
    )
    return 0


def cmd_admin_check(args: argparse.Namespace) -> int:
    from blindmatch.matcher.storage.integrity import check_data_dir

    report = check_data_dir(
        args.data_dir, hash_files=not args.no_hash, audit_key_file=args.audit_key
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.render(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def cmd_admin_backup(args: argparse.Namespace) -> int:
    from blindmatch.matcher.storage.backup import BackupError, backup_data_dir

    try:
        done = backup_data_dir(args.data_dir, args.out)
    except BackupError as exc:
        raise BlindmatchError(str(exc)) from None
    print(
        f"Backed up {args.data_dir} to {done.dest}: database snapshot and {done.uploads} "
        f"upload files ({done.bytes_copied} bytes), verified."
    )
    return 0


def _ref_key(args: argparse.Namespace, *, create: bool) -> bytes:
    from blindmatch.client.realtime import load_ref_key

    path = args.ref_key or _env("BLINDMATCH_REF_KEY")
    if not path:
        raise InputError(
            "no ref key: pass --ref-key FILE or set BLINDMATCH_REF_KEY (a local file, made "
            "on first use, that turns local ids into opaque row references)"
        )
    key, created = load_ref_key(path, create=create)
    if created:
        print(f"Made a new ref key in {path}; keep it with the encoded data.", file=sys.stderr)
    return key


def _summary(verb: str, s: IndexSummary) -> str:
    return (
        f"{verb}: {s.added} added, {s.replaced} replaced, {s.removed} removed; "
        f"the index now holds {s.record_count} records."
    )


def cmd_index_add(args: argparse.Namespace) -> int:
    from blindmatch.client.realtime import add_to_index

    encoded = read_encoded(args.encoded)
    key = _ref_key(args, create=True)
    with _client(args, _member_token(args)) as client:
        summary = add_to_index(client, args.project, encoded, key, args.id or None)
    print(_summary("Index updated", summary))
    return 0


def cmd_index_remove(args: argparse.Namespace) -> int:
    from blindmatch.client.realtime import remove_from_index

    key = _ref_key(args, create=False)
    with _client(args, _member_token(args)) as client:
        summary = remove_from_index(client, args.project, key, args.ids)
    print(_summary("Index updated", summary))
    return 0


def cmd_index_sync(args: argparse.Namespace) -> int:
    from blindmatch.client.realtime import sync_index

    encoded = read_encoded(args.encoded)
    key = _ref_key(args, create=True)
    with _client(args, _member_token(args)) as client:
        _plan, summary = sync_index(client, args.project, encoded, key)
    print(_summary("Index synced", summary))
    return 0


def cmd_index_show(args: argparse.Namespace) -> int:
    with _client(args, _member_token(args)) as client:
        listing = client.list_index(args.project)
    print(f"Your index in {args.project} holds {len(listing)} records.")
    return 0


PERSON_OPTIONS = {
    "given_name": "--given-name",
    "surname": "--surname",
    "dob": "--dob",
    "sex": "--sex",
    "postcode": "--postcode",
}


def _query_values(args: argparse.Namespace) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in args.field or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--field {item!r}: expected NAME=VALUE, e.g. surname=Smith")
        values[name.strip()] = value
    for name in PERSON_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    return values


def _encode_query(args: argparse.Namespace) -> tuple[EncodeResult, list[str]]:
    from blindmatch.client.realtime import encode_person, refuse_unreadable
    from blindmatch.client.sharedsecret import read_checked

    schema = load_schema(args.schema)
    secret, weak = read_checked(args.secret_file, args.allow_weak_secret)
    if weak:
        print(f"warning: {weak}", file=sys.stderr)
    values = _query_values(args)
    if args.data:
        if values:
            raise InputError("give either a CSV of people to query or fields, not both")
        if not args.mapping:
            raise InputError("--mapping is required with a CSV of people to query")
        result = encode_csv(args.data, schema, load_mapping(args.mapping, schema), secret)
        refuse_unreadable(result)
        labels = result.ids
    else:
        if not values:
            raise InputError(
                "nothing to query: give a person (e.g. --given-name, --surname, --dob, or "
                "--field NAME=VALUE) or a CSV with --mapping"
            )
        formats: dict[str, list[str]] = {}
        if args.date_format:
            formats = {f: [args.date_format] for f in values}
        if args.dob_format:
            formats["dob"] = [args.dob_format]
        result = encode_person(schema, secret, values, formats)
        labels = ["query"]
    if not result.ids:
        raise InputError(f"{args.data}: no records to query")
    return result, labels


def cmd_query(args: argparse.Namespace) -> int:
    from blindmatch.client.realtime import usable_fields
    from blindmatch.client.results import write_csv

    if not args.purpose or not args.purpose.strip():
        raise InputError("--purpose is required: say why you are asking (a case reference)")
    result, labels = _encode_query(args)
    with _client(args, _member_token(args)) as client:
        answer = client.query(
            args.project,
            result.clks,
            clk_bits=result.clk_bits,
            fingerprint=result.fingerprint,
            purpose=args.purpose,
        )
    usable = usable_fields(result)
    rows = []
    for label, matches in zip(labels, answer.results, strict=True):
        for m in matches:
            if m.refs:
                for i, ref in enumerate(m.refs):
                    score = f"{m.scores[i]:.4f}" if m.scores else ""
                    rows.append([label, m.partner, ref, score])
            else:
                rows.append([label, m.partner, "", ""])
    if args.json:
        print(
            json.dumps(
                {
                    "disclosure": answer.disclosure,
                    "partners": answer.partners,
                    "partner_levels": answer.partner_levels,
                    "counts": answer.counts,
                    "results": [
                        {
                            "record_id": label,
                            "compared_on": list(use.compared_on),
                            "missing": list(use.missing),
                            "matches": [
                                {"partner": m.partner, "refs": m.refs, "scores": m.scores}
                                for m in matches
                            ],
                        }
                        for label, matches, use in zip(labels, answer.results, usable, strict=True)
                    ],
                },
                indent=2,
            )
        )
        return 0
    if args.out:
        write_csv(args.out, ["record_id", "partner", "partner_ref", "score"], rows)
    searched = ", ".join(answer.partners) or "none (no partner has a standing index yet)"
    print(f"Searched partners: {searched}.")
    for label, matches, use in zip(labels, answer.results, usable, strict=True):
        holders = ", ".join(m.partner for m in matches)
        print(
            f"  {label}: {'held by ' + holders if holders else 'no partner match disclosed'} "
            f"({use.describe()})"
        )
        for m in matches:
            for i, ref in enumerate(m.refs):
                score = f" (score {m.scores[i]:.4f})" if m.scores else ""
                print(f"      {m.partner} ref {ref}{score}")
    counted = [p for p, lvl in answer.partner_levels.items() if lvl == "count"]
    for partner in counted:
        print(
            f"  {partner} allows counts only: it holds {answer.counts.get(partner, 0)} of "
            f"the {len(labels)} queried record(s)"
        )
    if args.out:
        print(f"Wrote {len(rows)} row(s) to {args.out}.")
    return 0


def cmd_admin_query_limits(args: argparse.Namespace) -> int:
    with _client(args, _admin_token()) as client:
        limits = client.set_query_limits(
            args.project,
            member=args.member or "",
            per_minute=args.per_minute or 0,
            per_day=args.per_day or 0,
            allow_watch=args.allow_watch,
        )
    who = limits.member or "every member without its own limits"
    print(
        f"Query limits in {limits.project} for {who}: {limits.per_minute} records per minute, "
        f"{limits.per_day} per 24 hours; watching {'allowed' if limits.allow_watch else 'off'}."
    )
    return 0


def cmd_admin_query_report(args: argparse.Namespace) -> int:
    with _client(args, _admin_token()) as client:
        report = client.query_report(args.project, hours=args.hours)
    if args.json:
        print(json.dumps([vars(v) for v in report], indent=2))
        return 0
    print(f"Query volume in {args.project}, last {args.hours} hours:")
    print(
        f"  {'member':<16} {'queries':>8} {'records':>8} {'hits':>6} {'peak/min':>8} "
        f"{'limit/day':>9} {'purposes':>8} {'refused':>7}"
    )
    for v in report:
        print(
            f"  {v.member:<16} {v.queries:>8} {v.records:>8} {v.records_with_hits:>6} "
            f"{v.peak_per_minute:>8} {v.per_day_limit:>9} {v.distinct_purposes:>8} "
            f"{v.refused:>7}"
        )
        for flag in v.flags:
            print(f"      UNUSUAL: {flag}")
    return 0


def cmd_schema_check(args: argparse.Namespace) -> int:
    from blindmatch.client.schemacheck import check_schema

    print(check_schema(args.schema).render())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from blindmatch.client.evaluate import evaluate_files

    report = evaluate_files(args.results, args.truth, member=args.member, out_dir=args.out_dir)
    print(report.render())
    return 0


def cmd_consent_set(args: argparse.Namespace) -> int:
    with _client(args, _member_token(args)) as client:
        level = client.set_consent(args.project, args.level)
    print(f"Partners in {args.project} now learn at most {level!r} about your records.")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    with _client(args, _member_token(args)) as client:
        erased = client.erase(args.project)
    print(
        f"Erased from {args.project}: {erased.uploads} upload(s) and {erased.links} result "
        "row(s) involving your records. The audit log keeps the fact, not the data."
    )
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    token = args.token or _env("BLINDMATCH_TOKEN")
    if token and not args.project:
        raise InputError("a member sees its own project's audit entries: pass --project")
    with _client(args, token or _admin_token()) as client:
        lines = [
            json.dumps(e, sort_keys=True, ensure_ascii=False)
            for e in client.audit(args.project or "", after=args.after)
        ]
    text = "".join(line + "\n" for line in lines)
    if args.out:
        from blindmatch.client.results import write_text

        write_text(args.out, text)
        print(f"Wrote {len(lines)} audit entries to {args.out}.", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _anchor(text: str) -> tuple[int, str]:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or len(digest) != 64:
        raise InputError(f"--anchor {text!r}: expected SEQ:HASH, as `audit verify` prints")
    return int(seq), digest.lower()


def cmd_audit_verify(args: argparse.Namespace) -> int:
    anchor = _anchor(args.anchor) if args.anchor else None
    with _client(args, _admin_token()) as client:
        check = client.verify_audit(anchor)
    if not check.ok:
        for problem in check.problems:
            print(f"  {problem}", file=sys.stderr)
        print(f"Error: the audit log fails verification ({len(check.problems)} problems)")
        return 1
    print(
        f"Audit log intact: {check.entries} entries. Head {check.head_seq}:{check.head_hash}\n"
        "Record the head elsewhere and pass it as --anchor next time to catch a cut-off tail."
    )
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from blindmatch.client.certs import make_certs, make_dask_certs

    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    if args.dask:
        made = make_dask_certs(args.out, hosts, days=args.days)
        print(daskopts.how_to_use(made, args.days))
        return 0
    files = make_certs(args.out, hosts, days=args.days)
    print(
        f"Wrote a throwaway CA, server and client certificate to {args.out} "
        f"(valid {args.days} days; for trials only). Use them like this:\n"
        f"  blindmatch serve ... --tls-cert {files.server_cert} --tls-key {files.server_key} "
        f"--client-ca {files.ca_cert}\n"
        f"  blindmatch <command> ... --ca-cert {files.ca_cert} "
        f"--client-cert {files.client_cert} --client-key {files.client_key}"
    )
    return 0


def cmd_privacy_check(args: argparse.Namespace) -> int:
    from blindmatch.client.harden import NONE, RECOMMENDED
    from blindmatch.client.privacy.check import (
        ATTACKS,
        DEFAULT_SCHEMA,
        check_csv,
        check_synthetic,
        write_outputs,
    )
    from blindmatch.client.privacy.frequencies import read_list

    schema = load_schema(args.schema or DEFAULT_SCHEMA)
    hardening = {"schema": None, "recommended": RECOMMENDED, "none": NONE}[args.hardening]
    overrides = {}
    for item in args.frequencies:
        name, sep, path = item.partition("=")
        if not sep or name not in schema.field_names:
            raise InputError(
                f"--frequencies {item!r}: expected FIELD=CSV with FIELD one of "
                f"{', '.join(schema.field_names)}"
            )
        overrides[name] = read_list(Path(path))
    attacks = ATTACKS if args.graph_records > 0 else tuple(a for a in ATTACKS if a != "graph")
    if args.data is None:
        report = check_synthetic(
            args.records, args.seed, schema, hardening=hardening, level=args.encoding,
            attacks=attacks, graph_records=args.graph_records,
        )  # fmt: skip
    else:
        if args.mapping is None or args.secret_file is None:
            raise InputError("privacy-check DATA.csv needs --mapping and --secret-file")
        report = check_csv(
            args.data,
            schema,
            args.mapping,
            read_secret(args.secret_file),
            hardening=hardening,
            level=args.encoding,
            overrides=overrides,
            attacks=attacks,
            graph_records=args.graph_records,
        )
    json_path, png_path = write_outputs(report, args.out)
    print(report.render())
    print(f"Wrote {json_path} and {png_path}")
    return 1 if args.strict and not report.passed else 0


def cmd_secret_new(args: argparse.Namespace) -> int:
    from blindmatch.client.sharedsecret import new_secret

    ident = new_secret(args.file)
    print(
        f"Wrote a new 256-bit secret to {args.file} (owner-only). Its id is {ident}: members "
        "compare ids by phone, never the secret. Send it to each other member sealed to their "
        "public key (`blindmatch secret seal`); never to the operator."
    )
    return 0


def cmd_secret_keygen(args: argparse.Namespace) -> int:
    from blindmatch.client.sharedsecret import keygen

    files = keygen(args.private, args.public, args.label)
    print(
        f"Wrote {files.private} (private key, owner-only: keep it) and {files.public} (public "
        "key: give it to the member who sends the secret)."
    )
    return 0


def cmd_secret_seal(args: argparse.Namespace) -> int:
    from blindmatch.client.sharedsecret import read_checked, read_public, seal, secret_id
    from blindmatch.client.sharedsecret import write_private as write_new

    secret, _weak = read_checked(args.secret_file)
    key, label = read_public(args.to)
    write_new(args.out, seal(secret, key, label))
    print(
        f"Sealed the secret (id {secret_id(secret)}) to {label} in {args.out}; send the file "
        "by any channel. Only that member's private key opens it."
    )
    return 0


def cmd_secret_open(args: argparse.Namespace) -> int:
    from blindmatch.client.sharedsecret import (
        open_sealed,
        read_private,
        secret_id,
        strength_problem,
        write_private,
    )

    sealed = Path(args.sealed)
    try:
        data = sealed.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{sealed}: sealed file not found") from None
    secret = open_sealed(data, read_private(args.key), str(sealed))
    problem = strength_problem(secret)
    if problem:
        raise InputError(f"{sealed}: the sealed secret is too weak to use: {problem}")
    write_private(args.out, secret + b"\n")
    print(
        f"Wrote the secret to {args.out} (owner-only). Its id is {secret_id(secret)}: check it "
        "with the sender by phone before encoding."
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from blindmatch.client.demo import run_demo

    run_demo(records=args.records, seed=args.seed)
    return 0


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blindmatch",
        description="Find who else holds a record about the same person, without showing records.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    net = argparse.ArgumentParser(add_help=False)
    g = net.add_argument_group("connection")
    g.add_argument(
        "--server",
        default=_env("BLINDMATCH_SERVER") or DEFAULT_SERVER,
        help="matcher HOST:PORT (default: $BLINDMATCH_SERVER or %(default)s)",
    )
    g.add_argument("--ca-cert", default=_env("BLINDMATCH_CA_CERT"), help="CA to trust for TLS")
    g.add_argument(
        "--client-cert", default=_env("BLINDMATCH_CLIENT_CERT"), help="mutual TLS certificate"
    )
    g.add_argument("--client-key", default=_env("BLINDMATCH_CLIENT_KEY"), help="mutual TLS key")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    member = argparse.ArgumentParser(add_help=False)
    member.add_argument("--project", required=True, help="project name")
    member.add_argument("--token", help="member token (default: $BLINDMATCH_TOKEN)")

    p = sub.add_parser("serve", help="run the matcher (gRPC service)")
    p.add_argument("--data-dir", required=True, type=Path, help="where the matcher keeps its state")
    p.add_argument(
        "--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on (default: %(default)s)"
    )
    p.add_argument("--tls-cert", help="server certificate (PEM)")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--client-ca", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument(
        "--insecure-listen-on-network",
        dest="insecure",
        action="store_true",
        help="allow plaintext on a non-loopback address (tokens and encodings travel unencrypted)",
    )
    p.add_argument("--workers", type=int, help="threads for comparisons (default: all cores)")
    p.add_argument(
        "--lookup-threads",
        type=int,
        help="real-time look-up threads, run on the cores the request threads leave free; "
        "0: no placement, every thread anywhere (default: one per other core, at most 4)",
    )
    p.add_argument(
        "--audit-key",
        help="file with the audit log's HMAC key, made if missing (default: DATA_DIR/audit.key)",
    )
    p.add_argument(
        "--max-streams-per-member",
        type=int,
        default=DEFAULT_STREAMS_PER_MEMBER,
        help="uploads, result fetches and run watches one member may have in flight; "
        "more are refused as busy and retried by the client (default: %(default)s)",
    )
    p.add_argument(
        "--min-free-mb",
        type=float,
        default=0.0,
        help="refuse an upload that would leave less free disk than this (default: %(default)s)",
    )
    daskopts.add_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "admin", help="operator tools: data-dir check and backup, query limits and reports"
    )
    admin_sub = p.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    asub = admin_sub
    ac = asub.add_parser(
        "check", help="check a data dir: database integrity, every upload's file and hash, runs"
    )
    ac.add_argument("--data-dir", required=True, type=Path, help="the matcher's data dir")
    ac.add_argument("--json", action="store_true", help="print the report as JSON")
    ac.add_argument(
        "--no-hash", action="store_true", help="check file sizes only, not sha256 (faster)"
    )
    ac.add_argument(
        "--audit-key",
        type=Path,
        help="the audit chain's key, if serve keeps it outside the data dir (serve --audit-key)",
    )
    ac.set_defaults(func=cmd_admin_check)
    ab = asub.add_parser("backup", help="copy a data dir, even while the matcher serves it")
    ab.add_argument("--data-dir", required=True, type=Path, help="the matcher's data dir")
    ab.add_argument("--out", required=True, type=Path, help="new folder for the backup")
    ab.set_defaults(func=cmd_admin_backup)

    p = sub.add_parser("project", help="create or inspect projects")
    psub = p.add_subparsers(dest="project_command", required=True, metavar="ACTION")
    pc = psub.add_parser("create", parents=[net], help="create a project (operator)")
    pc.add_argument("name", help="project name")
    pc.add_argument("--members", required=True, help="comma-separated member names, e.g. a,b,c")
    pc.add_argument(
        "--disclose",
        choices=list(LEVELS),
        default="hits",
        help="what members learn (default: hits)",
    )
    pc.add_argument(
        "--threshold",
        type=float,
        help="Dice similarity threshold; with a field-level schema, the match probability "
        "(default: 0.8)",
    )
    pc.add_argument(
        "--blocking",
        choices=list(BLOCKINGS),
        default="auto",
        help="compare every pair (exhaustive), only pairs LSH proposes (lsh), or choose by "
        "size (auto, the default: LSH above 10^10 pairs per pair of members)",
    )
    pc.add_argument(
        "--require-purpose",
        action="store_true",
        help="every results request must give --purpose (a case reference), kept in the audit log",
    )
    pc.add_argument(
        "--expires-in",
        metavar="WHEN",
        help="when the project's encodings and results are deleted: 90d, 12h, 8w, 1y or a "
        "date (YYYY-MM-DD, UTC); default 180d",
    )
    pc.add_argument("--json", action="store_true", help="print {project, tokens} as JSON")
    pc.set_defaults(func=cmd_project_create)
    pr = psub.add_parser(
        "rotate-token", parents=[net], help="issue a member a new token; the old one stops working"
    )
    pr.add_argument("name", help="project name")
    pr.add_argument("--member", required=True, help="the member whose token to replace")
    pr.add_argument("--json", action="store_true", help="print {project, member, token} as JSON")
    pr.set_defaults(func=cmd_project_rotate_token)
    pv = psub.add_parser(
        "revoke-token", parents=[net], help="make a member's token stop working (operator)"
    )
    pv.add_argument("name", help="project name")
    pv.add_argument("--member", required=True, help="the member whose token to revoke")
    pv.set_defaults(func=cmd_project_revoke_token)
    ps = psub.add_parser("show", parents=[net], help="a project's members and latest run (member)")
    ps.add_argument("name", help="project name")
    ps.add_argument("--token", help="member token (default: $BLINDMATCH_TOKEN)")
    ps.set_defaults(func=cmd_project_show)

    p = sub.add_parser("encode", help="encode a CSV export into CLKs, locally")
    p.add_argument("data", type=Path, help="the CSV export")
    p.add_argument("--schema", required=True, type=Path, help="shared clkhash v3 schema (JSON)")
    p.add_argument("--secret-file", required=True, type=Path, help="file holding the shared secret")
    p.add_argument("--mapping", required=True, type=Path, help="this member's mapping (TOML)")
    p.add_argument("--out", required=True, type=Path, help="ENCODED folder to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no report or progress bar")
    p.add_argument(
        "--allow-weak-secret",
        action="store_true",
        help="encode with a secret that fails the strength rule (tests only; the report says so)",
    )
    p.add_argument(
        "--on-duplicate-id",
        choices=list(ON_DUPLICATE),
        default="error",
        help="a record id that repeats an earlier row's: stop (error, the default), encode "
        "only its first row (keep-first), or encode every row (keep-all); repeats are "
        "listed in the report either way",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="encode an export with no records (header only, or empty) instead of stopping",
    )
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("upload", parents=[net, member], help="upload encodings to the matcher")
    p.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser(
        "run", parents=[net, member], help="match all members' uploads, showing progress"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "results", parents=[net, member], help="fetch results and join them to local ids"
    )
    p.add_argument(
        "--encoded", required=True, type=Path, help="the ENCODED folder that was uploaded"
    )
    p.add_argument("--out", required=True, type=Path, help="CSV to write (e.g. hits.csv)")
    p.add_argument(
        "--purpose",
        help="why you are asking (a case reference); written to the audit log, and required "
        "by projects created with --require-purpose",
    )
    p.set_defaults(func=cmd_results)

    p = sub.add_parser(
        "report",
        parents=[net, member],
        help="write one self-contained HTML page of your results, data quality and audit",
        description="Fetch your results (an audited disclosure), the project's settings and "
        "your audit export, and write one HTML page that needs nothing else to open: overlap "
        "per partner with a chart, per-record results where your level allows, the encode "
        "report of ENCODED, the audit summary and, at the scores level, the evaluation. "
        "Example: blindmatch report --project pilot --encoded north.encoded --out report.html "
        "--purpose 'OP-2291'. See docs/report.md.",
    )
    p.add_argument(
        "--encoded", required=True, type=Path, help="the ENCODED folder that was uploaded"
    )
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument(
        "--purpose",
        help="why you are asking (a case reference); written to the audit log, and required "
        "by projects created with --require-purpose",
    )
    p.add_argument(
        "--truth",
        type=Path,
        help="CSV member,record_id,entity_id (as for `evaluate`): add precision, recall and, "
        "at the scores level, the evaluation plots",
    )
    p.add_argument(
        "--no-records",
        action="store_true",
        help="leave the per-record rows (your record ids) out of the page",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("consent", help="limit what partners learn about your records (member)")
    csub = p.add_subparsers(dest="consent_command", required=True, metavar="ACTION")
    cs = csub.add_parser(
        "set", parents=[net, member], help="set the most partners may learn about your records"
    )
    cs.add_argument(
        "--level",
        required=True,
        choices=list(LEVELS),
        help="count, hits or mapping (scores: no limit beyond the project's own level)",
    )
    cs.set_defaults(func=cmd_consent_set)

    p = sub.add_parser(
        "erase", parents=[net, member], help="delete your uploads and results from the matcher"
    )
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("audit", help="export or verify the audit log")
    audit_sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ae = audit_sub.add_parser(
        "export",
        parents=[net],
        help="audit entries as JSON lines (operator: all; member: those that concern it)",
    )
    ae.add_argument("--project", help="one project (required with a member token)")
    ae.add_argument(
        "--token",
        help="member token (default: $BLINDMATCH_TOKEN; without one, $BLINDMATCH_ADMIN_TOKEN)",
    )
    ae.add_argument("--after", type=int, default=0, metavar="SEQ", help="only entries after SEQ")
    ae.add_argument("--out", type=Path, help="file to write (default: standard output)")
    ae.set_defaults(func=cmd_audit_export)
    av = audit_sub.add_parser(
        "verify", parents=[net], help="check the audit log's hash chain (operator)"
    )
    av.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="a head printed by an earlier verify: it must still be in the log, unchanged",
    )
    av.set_defaults(func=cmd_audit_verify)

    p = sub.add_parser("certs", help="make a throwaway CA, server and client certificate (trials)")
    p.add_argument("--out", required=True, type=Path, help="folder to write them to")
    p.add_argument(
        "--hosts",
        help="extra server names or addresses, comma-separated (localhost, 127.0.0.1 and ::1 "
        "are always included)",
    )
    p.add_argument("--days", type=int, default=30, help="validity in days (default: 30)")
    p.add_argument(
        "--dask",
        action="store_true",
        help="instead: a Dask cluster's own CA and scheduler, worker and matcher certificates",
    )
    p.set_defaults(func=cmd_certs)

    ref_key = argparse.ArgumentParser(add_help=False)
    ref_key.add_argument(
        "--ref-key",
        help="local file keying the opaque row references (default: $BLINDMATCH_REF_KEY; "
        "made on first use)",
    )

    p = sub.add_parser("index", help="maintain this member's standing index (real-time)")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    ia = isub.add_parser(
        "add", parents=[net, member, ref_key], help="add or replace records of ENCODED"
    )
    ia.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    ia.add_argument("--id", action="append", help="only the record with this local id (repeatable)")
    ia.set_defaults(func=cmd_index_add)
    ir = isub.add_parser(
        "remove", parents=[net, member, ref_key], help="remove records by local id"
    )
    ir.add_argument("ids", nargs="+", metavar="ID", help="local record id(s) to remove")
    ir.set_defaults(func=cmd_index_remove)
    isy = isub.add_parser(
        "sync",
        parents=[net, member, ref_key],
        help="make the index hold exactly ENCODED's records (sends only the differences)",
    )
    isy.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    isy.set_defaults(func=cmd_index_sync)
    ish = isub.add_parser("show", parents=[net, member], help="how many records the index holds")
    ish.set_defaults(func=cmd_index_show)

    p = sub.add_parser(
        "query",
        parents=[net, member],
        help="ask which partners hold a person (or each person of a small CSV), now",
    )
    p.add_argument("data", nargs="?", type=Path, help="CSV of people to query (with --mapping)")
    p.add_argument("--mapping", type=Path, help="this member's mapping (TOML), for a CSV")
    p.add_argument("--schema", required=True, type=Path, help="shared clkhash v3 schema (JSON)")
    p.add_argument("--secret-file", required=True, type=Path, help="file holding the shared secret")
    p.add_argument(
        "--allow-weak-secret",
        action="store_true",
        help="query with a secret that fails the strength rule (tests only)",
    )
    p.add_argument("--purpose", required=True, help="why you ask (a case reference); logged")
    for name, flag in PERSON_OPTIONS.items():
        p.add_argument(flag, dest=name, help=f"the person's {name.replace('_', ' ')}")
    p.add_argument(
        "--field", action="append", metavar="NAME=VALUE", help="any schema field (repeatable)"
    )
    p.add_argument(
        "--date-format",
        help="how dates are written, e.g. %%m/%%d/%%Y (default: ISO 1975-11-02, 2 Nov 1975, "
        "or UK day-first 02/11/1975, 02-11-1975, 02.11.1975)",
    )
    p.add_argument("--dob-format", help="how --dob is written (as --date-format, for dob only)")
    p.add_argument("--out", type=Path, help="also write record_id,partner,partner_ref,score CSV")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=cmd_query)

    asub = admin_sub
    al = asub.add_parser(
        "query-limits", parents=[net], help="set query rate limits and quotas (operator)"
    )
    al.add_argument("project", help="project name")
    al.add_argument("--member", help="only this member (default: the project's default)")
    al.add_argument("--per-minute", type=int, help="records a member may query per minute")
    al.add_argument("--per-day", type=int, help="records a member may query per 24 hours")
    al.add_argument(
        "--allow-watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let members watch for later matches, or not (project-wide; unchanged unless "
        "given; off at first)",
    )
    al.set_defaults(func=cmd_admin_query_limits)
    ar = asub.add_parser(
        "query-report", parents=[net], help="query volume per member, unusual volume flagged"
    )
    ar.add_argument("project", help="project name")
    ar.add_argument("--hours", type=int, default=24, help="window (default: %(default)s)")
    ar.add_argument("--json", action="store_true", help="print the report as JSON")
    ar.set_defaults(func=cmd_admin_query_report)

    p = sub.add_parser("schema", help="check a linkage schema")
    ssub = p.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    sc = ssub.add_parser("check", help="validate a clkhash v3 schema and warn about weak designs")
    sc.add_argument("schema", type=Path, help="the schema (JSON)")
    sc.set_defaults(func=cmd_schema_check)

    p = sub.add_parser(
        "evaluate", help="precision, recall and F1 of results against known truth, with plots"
    )
    p.add_argument(
        "--results", required=True, type=Path, help="a results CSV from `blindmatch results`"
    )
    p.add_argument(
        "--truth",
        required=True,
        type=Path,
        help="CSV member,record_id,entity_id for every record of every member",
    )
    p.add_argument(
        "--member", help="whose results these are (default: the member whose ids they use)"
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        help="where to write sweep.csv and the PNG plots (default: RESULTS-evaluation/ beside it)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "privacy-check",
        help="attack encodings as the matcher could, and report what is re-identified",
        description="Encode a data set as `blindmatch encode` would, run the shipped attacks on "
        "the encodings alone (the plaintext only scores them), print the share of records and "
        "values re-identified with a verdict, and write privacy-check.json and .png. Without "
        "DATA, a seeded realistic synthetic export is checked. See docs/privacy.md.",
    )
    p.add_argument("data", nargs="?", type=Path, help="CSV export (default: synthetic data)")
    p.add_argument(
        "--schema", type=Path, help="clkhash v3 schema (default: schemas/person-uk.json)"
    )
    p.add_argument("--mapping", type=Path, help="this export's mapping (TOML); needed with DATA")
    p.add_argument("--secret-file", type=Path, help="the shared secret; needed with DATA")
    p.add_argument(
        "--encoding",
        choices=["schema", "record", "field", "both"],
        default="schema",
        help="attack what the schema uploads (default: record-level CLKs and any fallback "
        "CLKs, or one filter per field for a field-level schema), or record-level CLKs, "
        "field-level filters, or both",
    )
    p.add_argument(
        "--hardening",
        choices=["schema", "recommended", "none"],
        default="schema",
        help="the schema's blindmatch.hardening (default), or override it for comparison",
    )
    p.add_argument(
        "--frequencies",
        action="append",
        default=[],
        metavar="FIELD=CSV",
        help="a public value,count list for FIELD (repeatable; default: shipped lists, or the "
        "data's own frequencies for fields without one)",
    )
    p.add_argument("--records", type=int, default=10_000, help="synthetic people (default: 10000)")
    p.add_argument("--seed", type=int, default=1, help="synthetic data seed (default: 1)")
    p.add_argument(
        "--graph-records",
        type=int,
        default=2000,
        metavar="N",
        help="records the graph-matching attack is run on (a sample of larger data; it holds "
        "N x N matrices); 0 skips it (default: 2000)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("privacy-check"), help="folder for the JSON and PNG"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when an attack reaches 1%%")
    p.set_defaults(func=cmd_privacy_check)

    p = sub.add_parser(
        "secret",
        help="make, seal and open the shared linkage secret (members only, never the operator)",
        description="One member makes the secret (`secret new`), every other member makes a key "
        "pair (`secret keygen`) and sends the public key; the first seals the secret to each "
        "(`secret seal`), who opens it (`secret open`). See docs/security.md.",
    )
    xsub = p.add_subparsers(dest="secret_command", required=True, metavar="ACTION")
    x = xsub.add_parser("new", help="write a fresh 256-bit secret to a new owner-only file")
    x.add_argument("file", type=Path, help="the secret file to create (refused if it exists)")
    x.set_defaults(func=cmd_secret_new)
    x = xsub.add_parser("keygen", help="a member's key pair for receiving the secret sealed")
    x.add_argument("--private", required=True, type=Path, help="private key file to create")
    x.add_argument("--public", required=True, type=Path, help="public key file to create")
    x.add_argument("--label", required=True, help="who the key belongs to, e.g. north-police")
    x.set_defaults(func=cmd_secret_keygen)
    x = xsub.add_parser("seal", help="seal the secret to one member's public key")
    x.add_argument("--secret-file", required=True, type=Path, help="the secret to send")
    x.add_argument("--to", required=True, type=Path, help="the member's public key file")
    x.add_argument("--out", required=True, type=Path, help="sealed file to create")
    x.set_defaults(func=cmd_secret_seal)
    x = xsub.add_parser("open", help="open a sealed secret with your private key")
    x.add_argument("sealed", type=Path, help="the sealed file received")
    x.add_argument("--key", required=True, type=Path, help="your private key file")
    x.add_argument("--out", required=True, type=Path, help="secret file to create (owner-only)")
    x.set_defaults(func=cmd_secret_open)

    p = sub.add_parser("demo", help="the whole flow on built-in synthetic data, in one process")
    p.add_argument("--records", type=int, default=2000, help="people in the synthetic population")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BlindmatchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
