"""A project's mode as the command line says it (issue 18): what `project create` says on
stderr of a CLK project, the moment it is made, and what `serve` logs when it can make no
other kind (docs/privacy.md, "Graph matching"; docs/operations.md, "A project in two-server
mode")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
