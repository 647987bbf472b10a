"""Where the Dask cluster is and how the matcher reaches it (core/cluster.py runs the tasks
there): `DaskSettings` (`serve --dask-*`), checked before the matcher starts; a plaintext
scheduler refused anywhere but loopback unless `--dask-insecure` (`check_scheduler_address`).
"""

from __future__ import annotations

import importlib.util
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from blindmatch.matcher.core.clusterbuild import ClusterError

# About this many comparisons per exhaustive task: ~1 s of one core for the native
# kernel, so Dask's own cost per task (milliseconds) stays small beside it.
TASK_COMPARISONS = 2_000_000_000
PLAINTEXT = ("tcp", "ws")
ENCRYPTED = ("tls", "wss")


@dataclass(frozen=True)
class DaskSettings:
    """Where the cluster is and how to reach it.

    `clks`: where workers read upload files (a path or fsspec URL), or "scatter".
    `tls_*`: the matcher's certificate, key and the cluster's CA (all or none).
    `task_comparisons`: the size of a task, in exhaustive comparisons.
    """

    scheduler: str
    clks: str
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    task_comparisons: int = TASK_COMPARISONS
    connect_timeout: float = 20.0
    workers_timeout: float = 120.0

    @property
    def secure(self) -> bool:
        return self.tls_cert is not None

    def check(self) -> None:
        """Refuse what cannot work or is unsafe, before the matcher starts."""
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(tls) and not all(tls):
            raise ClusterError(
                "--dask-tls-ca, --dask-tls-cert and --dask-tls-key go together "
                "(`blindmatch certs --dask` makes them)"
            )
        for path in (p for p in tls if p is not None):
            if not Path(path).is_file():
                raise ClusterError(f"{path}: no such certificate or key file")
        if self.task_comparisons < 1:
            raise ClusterError("--dask-task-comparisons must be at least 1")
        if importlib.util.find_spec("distributed") is None:
            raise ClusterError(
                "the Dask executor needs dask and distributed: pip install 'blindmatch[dask]'"
            )
        check_scheduler_address(self.scheduler, secure=self.secure, allow=self.insecure)


def _split_address(address: str) -> tuple[str, str]:
    """(scheme, host) of a Dask address such as tls://10.0.0.5:8786 or 127.0.0.1:8786."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    return scheme.lower(), host.strip("[]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_scheduler_address(address: str, *, secure: bool, allow: bool) -> None:
    """Refuse a plaintext scheduler anywhere but loopback unless explicitly allowed.

    Workers see CLKs, so the matcher speaks to the cluster over TLS (tls://) with
    the cluster's certificates; tcp:// is for a cluster on this host.
    """
    scheme, host = _split_address(address)
    if not host:
        raise ClusterError(f"--dask-scheduler {address!r}: expected e.g. tls://HOST:8786")
    if scheme in ENCRYPTED:
        if not secure:
            raise ClusterError(
                f"--dask-scheduler {address}: a TLS scheduler needs the matcher's cluster "
                "certificate: give --dask-tls-ca, --dask-tls-cert and --dask-tls-key"
            )
        return
    if scheme not in PLAINTEXT:
        raise ClusterError(f"--dask-scheduler {address}: unknown scheme {scheme!r}; use tls://")
    if secure:
        raise ClusterError(
            f"--dask-scheduler {address}: cluster certificates were given for a plaintext "
            "address; write it as tls://..."
        )
    if allow or _is_loopback(host):
        return
    raise ClusterError(
        f"--dask-scheduler {address}: refusing a plaintext Dask scheduler on a non-loopback "
        "host (workers receive CLKs); use tls:// with --dask-tls-ca/--dask-tls-cert/"
        "--dask-tls-key (see docs/operations.md), or pass --dask-insecure if you really mean it"
    )
