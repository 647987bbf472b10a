"""The suite's processes read compiled bytecode rather than compiling every module again
(tests/conftest.py `_bytecode_in_tmp`): where the environment says to write none beside the
sources, it is written under the temp dir only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

ASK = (
    "import json, sys, blindmatch.matcher.server as s; "
    "print(json.dumps([sys.dont_write_bytecode, sys.pycache_prefix, s.__cached__]))"
)


def test_a_process_the_suite_starts_leaves_its_bytecode_for_the_next() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ASK], cwd=ROOT, capture_output=True, text=True, check=True
    )
    writes_none, prefix, cached = json.loads(done.stdout)
    assert writes_none is False  # so the next process reads what this one compiled
    assert Path(cached).is_file()
    if prefix is not None:  # the suite's own (in the temp dir) or one the environment gave
        assert Path(cached).is_relative_to(prefix)
        assert not Path(cached).is_relative_to(ROOT)  # nothing beside the sources
