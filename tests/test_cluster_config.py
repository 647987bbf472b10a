"""Who the matcher will send its comparisons to: a plaintext Dask scheduler off loopback is
refused unless allowed, by the executor and by `blindmatch serve` before it makes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.matcher.core import cluster as cluster_
from blindmatch.matcher.core.cluster import ClusterError


@pytest.mark.parametrize(
    ("address", "secure", "allow", "refusal"),
    [
        ("tcp://10.1.2.3:8786", False, False, "refusing a plaintext Dask scheduler"),
        ("scheduler.internal:8786", False, False, "refusing a plaintext Dask scheduler"),
        ("tls://10.1.2.3:8786", False, False, "needs the matcher's cluster certificate"),
        ("tcp://10.1.2.3:8786", True, False, "write it as tls://"),
        ("udp://10.1.2.3:8786", False, True, "unknown scheme"),
        ("tcp://10.1.2.3:8786", False, True, ""),
        ("tcp://127.0.0.1:8786", False, False, ""),
        ("tcp://[::1]:8786", False, False, ""),
        ("localhost:8786", False, False, ""),
        ("tls://10.1.2.3:8786", True, False, ""),
    ],
)
def test_a_plaintext_scheduler_off_loopback_is_refused_unless_allowed(
    address: str, secure: bool, allow: bool, refusal: str
) -> None:
    if refusal:
        with pytest.raises(ClusterError, match=refusal):
            cluster_.check_scheduler_address(address, secure=secure, allow=allow)
    else:
        cluster_.check_scheduler_address(address, secure=secure, allow=allow)


def test_serve_refuses_a_plaintext_scheduler_on_the_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path / "d"), "--executor", "dask",
                 "--dask-scheduler", "tcp://192.0.2.7:8786"])  # fmt: skip
    assert code == 2
    assert "--dask-insecure" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
