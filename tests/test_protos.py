"""The generated protobuf modules match protos/blindmatch.proto."""

from __future__ import annotations

import pytest

from blindmatch.protos import check


def test_generated_code_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main() == 0, capsys.readouterr().err
