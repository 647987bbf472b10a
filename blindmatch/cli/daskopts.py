"""`blindmatch serve`'s options for running batch comparisons on a Dask cluster."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.client.errors import InputError

if TYPE_CHECKING:
    from blindmatch.matcher.core.executor import Executor

SCHEDULER_ENV = "BLINDMATCH_DASK_SCHEDULER"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batch runs on a Dask cluster (docs/operations.md)")
    g.add_argument(
        "--executor",
        choices=("threads", "dask"),
        default="threads",
        help="where batch runs compare: this process's threads, or a Dask cluster "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help=f"the Dask scheduler, e.g. tls://10.0.0.5:8786 (default: ${SCHEDULER_ENV})",
    )
    g.add_argument(
        "--dask-clks",
        metavar="PATH|URL|scatter",
        help="where workers read upload files: a path or fsspec URL holding --data-dir's clks/ "
        "files, or 'scatter' to send them from the matcher (default: clks/ in --data-dir)",
    )
    g.add_argument("--dask-tls-ca", metavar="FILE", help="the cluster's CA certificate (PEM)")
    g.add_argument(
        "--dask-tls-cert", metavar="FILE", help="the matcher's cluster certificate (PEM)"
    )
    g.add_argument("--dask-tls-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument(
        "--dask-insecure",
        action="store_true",
        help="allow a plaintext (tcp://) scheduler on a non-loopback host "
        "(CLKs travel unencrypted)",
    )
    g.add_argument(
        "--dask-task-comparisons",
        type=int,
        metavar="N",
        help="size of a comparison task, in pairs compared (default: 2000000000)",
    )


def executor(args: argparse.Namespace) -> Executor | None:
    """The Dask executor the options ask for, or None for the matcher's threads."""
    from blindmatch.matcher.core.cluster import (
        TASK_COMPARISONS,
        ClusterError,
        DaskExecutor,
        DaskSettings,
    )

    scheduler = args.dask_scheduler or os.environ.get(SCHEDULER_ENV, "").strip() or None
    if args.executor != "dask":
        if args.dask_scheduler:
            raise InputError("--dask-scheduler needs --executor dask")
        return None
    if scheduler is None:
        raise InputError(f"--executor dask needs --dask-scheduler ADDRESS (or ${SCHEDULER_ENV})")
    clks = args.dask_clks or str(Path(args.data_dir).resolve() / "clks")
    try:
        return DaskExecutor(
            DaskSettings(
                scheduler,
                clks,
                tls_ca=args.dask_tls_ca,
                tls_cert=args.dask_tls_cert,
                tls_key=args.dask_tls_key,
                insecure=args.dask_insecure,
                task_comparisons=(
                    TASK_COMPARISONS
                    if args.dask_task_comparisons is None
                    else args.dask_task_comparisons
                ),
            )
        )
    except ClusterError as exc:
        raise InputError(str(exc)) from None


def how_to_use(files: list[Path], days: int) -> str:
    """What `blindmatch certs --dask` prints: the files and where each goes."""
    ca, _ca_key, sched, sched_key, worker, worker_key, matcher, matcher_key = files
    return (
        f"Wrote a Dask cluster CA and certificates to {ca.parent} (valid {days} days; for "
        "trials only). Use them like this:\n"
        f"  dask scheduler --tls-ca-file {ca} --tls-cert {sched} --tls-key {sched_key} "
        "--protocol tls\n"
        f"  dask worker tls://SCHEDULER:8786 --tls-ca-file {ca} --tls-cert {worker} "
        f"--tls-key {worker_key}\n"
        f"  blindmatch serve ... --executor dask --dask-scheduler tls://SCHEDULER:8786 "
        f"--dask-tls-ca {ca} --dask-tls-cert {matcher} --dask-tls-key {matcher_key}"
    )
