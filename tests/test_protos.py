"""The generated protobuf modules match protos/blindmatch.proto."""

from __future__ import annotations

import pytest

from blindmatch.protos import freshness


def test_generated_code_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert freshness.main() == 0, capsys.readouterr().err
