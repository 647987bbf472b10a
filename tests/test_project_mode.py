"""A project's mode where the operator makes and reads it (issue 18): a matcher that has S1
and S2 makes two-server projects unless `--mode clk` asks otherwise; `project create` says
which mode it made (its --json too) and, on stderr only, what a CLK project exposes (the
matcher, or anyone holding the uploads, re-identifies records by graph matching) and how to
avoid it; `project list` and `show` name the mode."""

from __future__ import annotations

import json

import pytest

from blindmatch.cli.app import main
from tests import twoserver_world
from tests.support import ADMIN_TOKEN, Matcher
from tests.twoserver_world import World

world = twoserver_world.world  # the fixture


def _create(target: str, name: str, *extra: str) -> list[str]:
    return ["project", "create", name, "--members", "north,south", "--json", *extra,
            "--server", target]  # fmt: skip


def test_a_combiner_makes_two_server_projects_unless_asked_and_says_which_it_made(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher in process (create_server with S1 and S2, no default mode given): before,
    its default was clk, `--json` did not say the mode, and `list` did not show it."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(_create(world.target, "plain")) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["mode"] == "two-server"
    assert "CLK project" not in said.err
    assert main(_create(world.target, "asked", "--mode", "clk")) == 0
    said = capsys.readouterr()
    made = json.loads(said.out)  # stdout is the reply alone: the note goes to stderr
    assert made["mode"] == "clk" and set(made["tokens"]) == {"north", "south"}
    # Asked for on a matcher that could have made a two-server one: the exposure, shorter.
    assert said.err.startswith("Note: asked is a CLK project (--mode clk): the matcher holds")
    assert "re-identify about 97%" in said.err and "graph matching" in said.err
    assert "--two-server" not in said.err and said.err.count("\n") == 1
    assert main(["project", "list", "--server", world.target]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows == {"project": "mode", "plain": "two-server", "asked": "clk"}
    assert main(["project", "show", "asked", "--operator", "--server", world.target]) == 0
    assert "blocking auto, mode clk)" in capsys.readouterr().out.splitlines()[0]


def test_a_clk_project_on_a_matcher_without_s1_and_s2_says_what_it_exposes_and_the_way_out(
    matcher: Matcher, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(_create(matcher.target, "crime")) == 0  # DESIGN.md's contract: unchanged
    said = capsys.readouterr()
    made = json.loads(said.out)
    assert made["project"] == "crime" and made["mode"] == "clk"
    assert said.err.startswith("Note: crime is a CLK project: the matcher holds its members' ")
    assert "anyone else holding the uploads" in said.err and "docs/privacy.md" in said.err
    assert "serve --two-server-s1 HOST:PORT --two-server-s2 HOST:PORT" in said.err
    assert "docs/operations.md#a-project-in-two-server-mode" in said.err
    # Without --json, stdout says the mode made; the note still goes to stderr only.
    assert main(["project", "create", "other", "--members", "a,b", "--server",
                 matcher.target]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert "mode: clk;" in said.out and "CLK project" not in said.out
    assert "Note: other is a CLK project" in said.err
    # -q: only results and errors, as everywhere (its own --help: "no progress, notes or
    # data-quality reports"); before, the note was written all the same.
    assert main(["project", "create", "quiet", "--members", "a,b", "-q", "--server",
                 matcher.target]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert "mode: clk;" in said.out and said.err == ""
