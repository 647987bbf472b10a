"""A project's mode as the command line says it (issue 18): what `project create` says on
stderr of a CLK project, the moment it is made, and what `serve` logs when it can make no
other kind (docs/privacy.md, "Graph matching"; docs/operations.md, "A project in two-server
mode")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.client.errors import InputError

if TYPE_CHECKING:
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.model import ProjectTokens

PRIVACY_DOC = "docs/privacy.md"
TWO_SERVER_DOC = "docs/operations.md#a-project-in-two-server-mode"

# What a CLK project exposes: the same words at `project create` and in `serve`'s log.
EXPOSURE = (
    "the matcher holds its members' CLKs, and it (or anyone else holding the uploads) can "
    "re-identify about 97% of the default schema's records from them by graph matching, with "
    f"plaintext on the same people ({PRIVACY_DOC})"
)


def clk_notice(created: ProjectTokens, asked: str) -> str | None:
    """`project create`'s paragraph on stderr for a CLK project (None for a two-server one):
    what it exposes and how to avoid it; shorter where the operator asked for `--mode clk`
    on a matcher that could have made a two-server project (`asked`: the --mode given, ""
    for none)."""
    if created.mode != "clk":
        return None
    if created.two_server_ready and asked == "clk":
        return f"Note: {created.project} is a CLK project (--mode clk): {EXPOSURE}."
    if created.two_server_ready:  # the matcher's --default-mode clk
        avoid = (
            "This matcher has S1 and S2: `project create --mode two-server` makes a project "
            f"whose CLKs never reach it ({TWO_SERVER_DOC})"
        )
    else:
        avoid = (
            "A matcher started with S1 and S2 (`serve --two-server-s1 HOST:PORT "
            "--two-server-s2 HOST:PORT ...`) holds no CLK: its projects are in two-server mode "
            f"unless `project create --mode clk` asks otherwise ({TWO_SERVER_DOC})"
        )
    return f"Note: {created.project} is a CLK project: {EXPOSURE}. {avoid}."


def bare_serve_line() -> str:
    """`serve`'s log line at start without S1 and S2: every project it makes is a CLK one."""
    return (
        f"no --two-server-s1/-s2: every project this matcher makes is a CLK project: {EXPOSURE}; "
        f"serving with S1 and S2 keeps the CLKs from the matcher ({TWO_SERVER_DOC})"
    )


def clk_refusal(folder: Path, project: str, command: str) -> str:
    """Why a folder encoded --two-server is not sent to a CLK project without --clk (issue
    18): `upload`'s words, and `index add`'s and `index sync`'s (`command`)."""
    return (
        f"{folder} was encoded --two-server, but {project} is a CLK project: its matcher "
        f"would hold your CLKs, from which it (or anyone holding the uploads) can re-identify "
        f"records by graph matching ({PRIVACY_DOC}). Nothing was sent. Ask the operator for a "
        f"project in two-server mode ({TWO_SERVER_DOC}), or, to send this CLK project your "
        f"CLKs all the same, `blindmatch {command} {folder} --project {project} --clk`"
    )


def no_index(project: str) -> str:
    """Why a two-server project has no index: `index add`'s, `sync`'s and `show`'s words."""
    return (
        f"project {project!r} runs in two-server mode: the matcher holds no CLKs, so it keeps "
        "no standing index"
    )


def no_index_shown(project: str) -> str:
    """`index show`'s answer in a two-server project (it said "holds 0 records" before)."""
    return (
        f"{no_index(project)}. `blindmatch query` and `blindmatch watch` work: they search "
        "the partners' two-server uploads at S1 and S2 (a watch, their later ones); keep "
        'yours current with `blindmatch upload` (docs/realtime.md, "Queries in a two-server '
        'project").'
    )


def refuse_index_folder(client: MatcherClient, args: argparse.Namespace, command: str) -> None:
    """`index add` and `index sync` (`command`): refused before anything is sent, or made
    (a new ref key), where the project takes no index of this folder: a two-server project
    keeps no standing index, and a folder encoded --two-server goes to a CLK project's index
    only with --clk, as to its upload. Its settings alone are asked: nothing audited."""
    from blindmatch.client.encoding.sharing import SHARED_FOLDER

    shared = (args.encoded / SHARED_FOLDER).is_dir()
    if client.describe(args.project, settings_only=True).mode == "two-server":
        encode = "" if shared else (
            f"; {args.encoded} was encoded without --two-server: encode the same export with "
            "`blindmatch encode ... --two-server` for that"
        )  # fmt: skip
        raise InputError(
            f"{no_index(args.project)}. Nothing was sent. `blindmatch query` works: it "
            "searches the partners' latest two-server uploads at S1 and S2; keep yours "
            f'current with `blindmatch upload`{encode} (docs/realtime.md, "Queries in a '
            'two-server project")'
        )
    if shared and not args.clk:
        raise InputError(clk_refusal(args.encoded, args.project, command))


def index_clk_option(p: argparse.ArgumentParser) -> None:
    """`index add`'s and `index sync`'s --clk (refuse_index_folder)."""
    p.add_argument(
        "--clk",
        action="store_true",
        help="a folder encoded --two-server: put its CLKs in this CLK project's index all the "
        "same (without --clk refused, nothing sent: the matcher would hold them, as `upload "
        "--clk`; docs/privacy.md)",
    )
