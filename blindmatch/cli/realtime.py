"""`blindmatch index ...` and `query`: a member's standing index and real-time questions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import (
    Subcommands,
    actions,
    command,
    connect,
    connection_options,
    date_format,
    member_options,
    member_token,
    schema_secret_options,
)
from blindmatch.cli.person import PERSON_OPTIONS, query_values
from blindmatch.cli.projectmode import index_clk_option, no_index_shown, refuse_index_folder
from blindmatch.cli.refkey import existing_ref_key, ref_key_for_change, ref_key_path
from blindmatch.cli.twoserver_caps import allow_band_keys_option
from blindmatch.client.errors import InputError
from blindmatch.matcher.domain import counted

if TYPE_CHECKING:
    from blindmatch.client.encoding.encode import EncodeResult
    from blindmatch.client.encoding.sharing import SharedUpload
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.index import SyncPart
    from blindmatch.client.remote.model import IndexSummary, QueryAnswer

# (`.format(project=...)`: before tworefs it said `--project P`, where `request` names it)
QUOTE = (
    "quote it in your formal request to that partner only; it resolves it to its own record "
    "with `blindmatch resolve REFERENCE --project {project} --encoded ITS.encoded` (audited, "
    "and you see it resolved). A hit is a lead, not an identification (docs/requests.md)."
)


def _summary(args: argparse.Namespace, verb: str, s: IndexSummary) -> None:
    if not args.quiet:  # -q: nothing, as `upload -q` (exit 0 says it is stored)
        print(f"{verb}: {s.added} added, {s.replaced} replaced, {s.removed} removed; "
              f"the index now holds {s.record_count} records.")  # fmt: skip


def cmd_index_add(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.remote.index import add_to_index

    encoded = read_encoded(args.encoded)
    path = ref_key_path(args)
    with connect(args, member_token(args)) as client:
        refuse_index_folder(client, args, "index add")  # before a ref key is made
        with ref_key_for_change(path, encoded) as key:
            summary = add_to_index(client, args.project, encoded, key, args.id or None)
    _summary(args, "Index updated", summary)
    return 0


def cmd_index_remove(args: argparse.Namespace) -> int:
    from blindmatch.client.remote.index import remove_from_index

    key = existing_ref_key(ref_key_path(args))
    with connect(args, member_token(args)) as client:
        summary = remove_from_index(client, args.project, key, args.ids)
    _summary(args, "Index updated", summary)
    return 0


def cmd_index_sync(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.progress import Throttle
    from blindmatch.client.remote.index import sync_index

    encoded = read_encoded(args.encoded)
    path = ref_key_path(args)
    parts = 0
    throttle, last = Throttle(), None  # a line a change could flood a log: as progress.py

    def told(part: SyncPart) -> None:
        nonlocal parts, last
        parts, last = part.number, part
        if args.quiet or (part.number == 1 and part.planned == 1):
            return
        if part.number == 1:
            print(
                "The differences are more than one index change carries: sending them as "
                "several changes, each applied all or nothing (if this is cut short, run "
                "`index sync` again: it sends only what is still different).",
                file=sys.stderr,
            )
        if throttle.due(part.number, max(part.planned, part.number)):
            _change_line(part)

    with connect(args, member_token(args)) as client:
        refuse_index_folder(client, args, "index sync")  # before a ref key is made
        with ref_key_for_change(path, encoded, lambda: parts) as key:
            try:
                _plan, summary = sync_index(client, args.project, encoded, key, progress=told)
            finally:  # the last change stored, said even where held back or the sync cut
                if throttle.held and last is not None:
                    _change_line(last)
    _summary(args, "Index synced" if parts <= 1 else f"Index synced in {parts} changes", summary)
    return 0


def _change_line(part: SyncPart) -> None:
    s = part.summary
    print(
        f"Change {part.number} of {max(part.planned, part.number)} stored: {s.added} "
        f"added, {s.replaced} replaced, {s.removed} removed; the index holds "
        f"{s.record_count} records.",
        file=sys.stderr,
        flush=True,
    )


def cmd_index_show(args: argparse.Namespace) -> int:
    with connect(args, member_token(args)) as client:
        if client.describe(args.project, settings_only=True).mode == "two-server":
            print(no_index_shown(args.project))  # its settings alone asked: not audited
            return 0
        listing = client.list_index(args.project)
    print(f"Your index in {args.project} holds {len(listing)} records.")
    return 0


def encode_query(
    args: argparse.Namespace, verb: str = "query"
) -> tuple[EncodeResult, list[str], Any, bytes]:
    """The query's (or, `verb` "watch", the watch's) records encoded, their labels, the
    schema and the secret."""
    from blindmatch.client.encoding.encode import encode_csv
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.person import (
        encode_person,
        refuse_nothing_usable,
        refuse_unreadable,
        refuse_untiered,
    )
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.encoding.sharedsecret import read_checked
    from blindmatch.matcher.domain import MAX_QUERY_RECORDS

    schema = load_schema(args.schema)
    secret, weak = read_checked(args.secret_file, args.allow_weak_secret)
    if weak:
        print(f"warning: {weak}", file=sys.stderr)
    values, given = query_values(args)
    if args.data:
        if values:
            raise InputError(f"give either a CSV of people to {verb} or fields, not both")
        if not args.mapping:
            raise InputError(f"--mapping is required with a CSV of people to {verb}")
        if args.date_format or args.dob_format:
            raise InputError(
                f"--dob-format and --date-format are for a person given as options; a CSV of "
                f"people to {verb} is read with its mapping: set date_format in {args.mapping}"
            )
        # An empty CSV is refused below, in the command's own words (encode's --allow-empty
        # and --on-duplicate-id are not options here).
        result = encode_csv(
            args.data, schema, load_mapping(args.mapping, schema), secret, allow_empty=True,
            duplicate_hint=f"give each person in the CSV its own id to {verb}",
        )  # fmt: skip
        refuse_unreadable(result, verb=verb, mapping=Path(args.mapping), schema=schema)
        refuse_nothing_usable(result, verb=verb)
        if len(result.ids) > MAX_QUERY_RECORDS:  # refused here, before any CLK is sent
            raise InputError(
                f"{args.data}: {len(result.ids)} records; one {verb} takes at most "
                f"{MAX_QUERY_RECORDS}: split the file (or match the whole export in a batch run)"
            )
        refuse_untiered(result, schema, verb=verb)
        labels = result.ids
    else:
        if not values:
            raise InputError(
                f"nothing to {verb}: give a person (e.g. --given-name, --surname, --dob, or "
                "--field NAME=VALUE) or a CSV with --mapping"
            )
        formats: dict[str, list[str]] = {}
        if args.date_format:
            formats = {f: [args.date_format] for f in values}
        if args.dob_format:
            formats["dob"] = [args.dob_format]
        result = encode_person(schema, secret, values, formats, verb=verb, given=given)
        labels = ["query"]
    if not result.ids:
        raise InputError(f"{args.data}: no records to {verb} (the file has none)")
    return result, labels, schema, secret


def shared_records(result: EncodeResult, schema: Any, secret: bytes) -> SharedUpload:
    """The records encoded as `encode --two-server` would (client/encoding/sharing.py): the
    shares and sealed band keys a two-server query or watch sends to S1 and S2."""
    import numpy as np

    from blindmatch.client.encoding import sharing

    clks = np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, result.clk_bits // 8)
    return sharing.shared_upload(clks, secret, sharing.plan_of(schema), result.fallback_bits)


def _two_server_query(
    client: MatcherClient, args: argparse.Namespace, result: EncodeResult, schema: Any,
    secret: bytes,
) -> QueryAnswer:  # fmt: skip
    """A query in a two-server project: the records' shares to S1 and S2, the matcher asked."""
    upload = shared_records(result, schema, secret)
    return client.query(
        args.project, upload, clk_bits=result.clk_bits, fingerprint=result.fingerprint,
        purpose=args.purpose, schema_digest=result.schema_digest, rule=result.rule,
        allow_band_keys=args.allow_band_keys,
    )  # fmt: skip


@ends_at_sigterm  # the person's one-row CSV, in a temporary folder while encoded, deleted
def cmd_query(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.person import usable_fields
    from blindmatch.client.files import check_writable, write_csv

    if not args.purpose or not args.purpose.strip():
        raise InputError("--purpose is required: say why you are asking (a case reference)")
    if args.out:  # before the query, which is logged and counted
        check_writable(args.out)
    result, labels, schema, secret = encode_query(args)
    with connect(args, member_token(args)) as client:
        # A two-server project's matcher never takes a CLK: asked first, so none is sent.
        if client.describe(args.project, settings_only=True).mode == "two-server":
            answer = _two_server_query(client, args, result, schema, secret)
        else:
            answer = client.query(
                args.project,
                result.clks,
                clk_bits=result.clk_bits,
                fingerprint=result.fingerprint,
                purpose=args.purpose,
                fallback_bits=result.fallback_bits,
                rule=result.rule,
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
                    "not_searched": answer.not_searched,
                    "partner_levels": answer.partner_levels,
                    "counts": answer.counts,
                    "results": [
                        {
                            "record_id": label,
                            "compared_on": list(use.compared_on),
                            "missing": list(use.missing),
                            "placeholders": dict(use.placeholders),
                            "notes": [list(note) for note in use.notes],
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
    none = "none" if answer.not_searched else "none (no partner has a standing index yet)"
    searched = ", ".join(answer.partners) or none
    print(f"Searched partners: {searched}.")
    for partner, why in answer.not_searched.items():
        print(f"Not searched: {partner}: {why}.")
    count_only = [p for p, lvl in answer.partner_levels.items() if lvl == "count"]
    for label, matches, use in zip(labels, answer.results, usable, strict=True):
        holders = ", ".join(m.partner for m in matches)
        said = f"held by {holders}" if holders else _no_holder(answer.partners, count_only)
        print(f"  {label}: {said} ({use.describe()})")
        for m in matches:
            for i, ref in enumerate(m.refs):
                score = f" (score {m.scores[i]:.4f})" if m.scores else ""
                print(f"      {m.partner} ref {ref}{score}")
    for partner in count_only:
        print(
            f"  {partner} allows counts only: it holds {answer.counts.get(partner, 0)} of "
            f"the {counted(len(labels), 'queried record')}"
        )
    if args.out and not args.quiet:
        print(f"Wrote {counted(len(rows), 'row')} to {args.out}{_unwritten(answer, count_only)}.")
    if not args.quiet and any(row[2].startswith("bmr-") for row in rows):  # two-server, mapping
        print(f"Each bmr- ref is a request reference: {QUOTE.format(project=args.project)}")
    return 0


def _no_holder(searched: list[str], count_only: list[str]) -> str:
    """A record's line when no partner is shown holding it, in words that are never read as
    "no partner holds this person" where a partner was not searched, or answers in counts
    only (which the record's line cannot show)."""
    if not searched:
        return "no partner searched"
    per_record = [p for p in searched if p not in count_only]
    only = f"{', '.join(count_only)} allow{'s' if len(count_only) == 1 else ''} counts only"
    if not per_record:
        return f"not told per record: {only}"
    if count_only:
        return f"no match disclosed by {', '.join(per_record)}; {only}"
    return "no partner match disclosed"


def _unwritten(answer: QueryAnswer, count_only: list[str]) -> str:
    """What `--out`'s rows leave out (a row is a record and a partner shown holding it), so
    that a record in no row is not read as one not asked about, or not held."""
    said = []
    none = sum(1 for matches in answer.results if not matches)
    if none and any(p not in count_only for p in answer.partners):
        said.append(
            f"{none} of the {counted(len(answer.results), 'record')} in no row: no match disclosed"
        )
    if count_only:
        said.append(f"{', '.join(count_only)}: counts only, no rows")
    return f" ({'; '.join(said)})" if said else ""


def person_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """Who `query` or `watch` is about, and how it is encoded: a person (options or
    --person-file) or a CSV with its mapping, the schema, the secret, the purpose."""
    p.add_argument("data", nargs="?", type=Path, help=f"CSV of people to {verb} (with --mapping)")
    p.add_argument(
        "--mapping", metavar="FILE", type=Path, help="this member's mapping (TOML), for a CSV"
    )
    schema_secret_options(p)
    p.add_argument(
        "--allow-weak-secret",
        action="store_true",
        help=f"{verb} with a secret that fails the strength rule (tests only)",
    )
    p.add_argument("--purpose", required=True, help="why you ask (a case reference); logged")
    words = {"dob": "date of birth (ISO, UK day-first or with the month in words; written "
                    "otherwise: say how with --dob-format)",
             "sex": "sex: F, M or X (or a word starting with one: female)"}  # fmt: skip
    for name, flag in PERSON_OPTIONS.items():
        word = words.get(name, name.replace("_", " "))
        p.add_argument(flag, dest=name, help=f"the person's {word}")
    p.add_argument(
        "--field", action="append", metavar="NAME=VALUE", help="any schema field (repeatable)"
    )
    p.add_argument(
        "--person-file",
        metavar="FILE",
        help="the person as NAME=VALUE lines (given_name, surname, dob, ... or any schema "
        "field), from FILE or - for standard input: unlike options, not visible in `ps` "
        "or shell history",
    )
    p.add_argument(
        "--date-format",
        type=date_format,
        help="how dates are written, e.g. %%m/%%d/%%Y (default: ISO 1975-11-02, 2 Nov 1975, "
        "or UK day-first 02/11/1975, 02-11-1975, 02.11.1975, 02-Nov-1975)",
    )
    dob_help = "how --dob is written (as --date-format, for dob only)"
    p.add_argument("--dob-format", type=date_format, help=dob_help)
    allow_band_keys_option(p)


def register(sub: Subcommands) -> None:
    net, member = connection_options(), member_options()
    ref_key = argparse.ArgumentParser(add_help=False)
    ref_key.add_argument(
        "--ref-key",
        metavar="FILE",
        help="local file keying the opaque row references, made on first use: keep it with "
        "the encoded data and give the same one each time; your own, never the linkage secret "
        "(refused) (required unless $BLINDMATCH_REF_KEY names it)",
    )

    group = command(
        sub,
        "index",
        help="maintain this member's standing index (real-time)",
        example="blindmatch index sync north.encoded --project burglary --token-file north.token "
        "--ref-key north.refkey",
    )
    isub = actions(group, "index_command")
    ia = command(
        isub,
        "add",
        help="add or replace records of ENCODED",
        example="blindmatch index add north.encoded --project burglary --token-file north.token "
        "--ref-key north.refkey --id N1 --id N2",
        handler=cmd_index_add,
        parents=[net, member, ref_key],
    )
    ia.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    ia.add_argument("--id", action="append", help="only the record with this local id (repeatable)")
    index_clk_option(ia)
    ir = command(
        isub,
        "remove",
        help="remove records by local id",
        example="blindmatch index remove N1 N2 --project burglary --token-file north.token "
        "--ref-key north.refkey",
        handler=cmd_index_remove,
        parents=[net, member, ref_key],
    )
    ir.add_argument("ids", nargs="+", metavar="ID", help="local record id(s) to remove")
    isy = command(
        isub,
        "sync",
        help="make the index hold exactly ENCODED's records (sends only the differences; "
        "large ones as several changes, each under the matcher's limit)",
        description="Make this member's standing index hold exactly ENCODED's records, sending "
        "only the differences (large ones as several changes, each under the matcher's limit). "
        "The project's mode is asked first: a project in two-server mode keeps no index, and "
        "a folder encoded --two-server goes to a CLK project only with --clk; refused, "
        "nothing is sent and no ref key made.",
        example="blindmatch index sync north.encoded --project burglary --token-file north.token "
        "--ref-key north.refkey",
        handler=cmd_index_sync,
        parents=[net, member, ref_key],
    )
    isy.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    index_clk_option(isy)
    command(
        isub,
        "show",
        help="how many records the index holds",
        example="blindmatch index show --project burglary --token-file north.token",
        handler=cmd_index_show,
        parents=[net, member],
    )

    p = command(
        sub,
        "query",
        help="ask which partners hold a person (or each person of a small CSV), now",
        description="Ask which partners' standing indexes hold a person given on the command "
        "line or in a file (--person-file, kept out of `ps`), or each person of a small CSV, "
        "and print what the disclosure levels allow. Every query is logged with its --purpose. "
        "In a two-server project it searches the partners' latest uploads at S1 and S2 "
        "instead (the records go to S1 and S2 as shares, never to the matcher). Partners "
        "that could not be searched (no standing index; in a two-server project, no upload) "
        "are named, so that their silence is not read as not holding the person.",
        example=[
            "blindmatch query --project burglary --schema person-uk.json --secret-file "
            "linkage.secret --token-file north.token --purpose 'case 24/118' --person-file "
            "- < grace.txt",
            "blindmatch query --project burglary --schema person-uk.json --secret-file "
            "linkage.secret --purpose 'case 24/118' --given-name Grace --surname Hughes "
            "--dob 2001-12-12",
            "blindmatch query people.csv --mapping north.toml --project burglary --schema "
            "person-uk.json --secret-file linkage.secret --purpose 'case 24/118' --out hits.csv",
        ],
        handler=cmd_query,
        parents=[net, member],
    )
    person_arguments(p, "query")
    p.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        help="also write record_id,partner,partner_ref,score CSV (an existing FILE is replaced)",
    )
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
