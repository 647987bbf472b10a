"""Batch runs on a Dask cluster: comparison tasks go to Dask workers, the rest stays here.

`DaskExecutor` sends a run's comparison tasks (core.tasks) to a Dask
scheduler (`serve --executor dask --dask-scheduler ADDRESS`); planning,
solving, disclosure and storage stay in the matcher. Workers get the CLKs in
one of two ways (`--dask-clks`):

- **shared storage** (the default): each task reads only the rows it needs
  from the matcher's upload files, which the workers see at a path (the
  matcher's own `DATA_DIR/clks` unless told otherwise: a local cluster, or a
  shared file system mounted at the same path) or an fsspec URL (an object
  store the files are copied to). Upload files never change once written, and
  every run first checks each file's size and sha256 on a worker, so a stale
  or missing copy fails the run instead of changing its results. Memory per
  worker is bounded by its tasks' rows; the matcher sends no CLK.
- **scatter**: the matcher sends each slice of CLKs a task needs to the
  cluster once per run, and releases it when the last task needing it is done.

Faults: a worker lost mid-run has its tasks rerun by Dask (a lost scattered
slice is sent again); the scheduler unreachable or lost fails the run with a
`ClusterError` saying so, storing nothing, and the run can be started again; so
does a worker running another blindmatch than the matcher's (core.clusterbuild).
The distributed package is imported only when a run uses the cluster: the
plain install never needs it. Where the cluster is and how it is reached (`DaskSettings`,
checked before the matcher starts) is core/clustersettings.py's.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import blocking as blocking_
from blindmatch.matcher.core.clusterbuild import ClusterError, check_workers, refuse_other_build
from blindmatch.matcher.core.clustersettings import TASK_COMPARISONS as TASK_COMPARISONS
from blindmatch.matcher.core.clustersettings import DaskSettings as DaskSettings
from blindmatch.matcher.core.clustersettings import (
    check_scheduler_address as check_scheduler_address,
)
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.executor import (
    BANDS_PER_TASK,
    ClkFile,
    CompareJob,
    Progress,
    Tally,
    TaskProgress,
    rows_of,
)
from blindmatch.matcher.core.memory import keep_freed_memory
from blindmatch.matcher.core.tasks import Rows, Task, TaskResult, combine, plan_tasks, run_task

if TYPE_CHECKING:
    from distributed import Client, Future
    from distributed.security import Security

log = logging.getLogger("blindmatch.matcher")

Clks = npt.NDArray[np.uint8]

SCATTER = "scatter"
# An LSH task's bands hold about this many rows of keys per task per unit of
# TASK_COMPARISONS (both datasets' rows x bands), and at least BANDS_PER_TASK bands
# (one pass of the native band path's keys; 16 bands of 1M x 1M are a few seconds).
BAND_ROWS_PER_COMPARISON = 1 / 1_250
READ_BLOCK = 8 * 1024 * 1024  # bytes read at a time when checking a file
RESUBMITS = 3  # times one task is sent again after its scattered inputs were lost


# -- what runs on the workers (importable: workers need blindmatch installed) --------------


@dataclass(frozen=True)
class SharedRows:
    """Rows of an upload file a worker reads itself: `columns` of each `width`-byte CLK."""

    url: str
    rows: Rows
    width: int
    columns: int


def _local_path(url: str) -> str | None:
    from fsspec.core import split_protocol

    protocol, path = split_protocol(url)
    return path if protocol in (None, "file", "local") else None


def read_rows(src: SharedRows) -> Clks:
    """The rows `src` names, read from the file (mapped, for a local path)."""
    count, width = len(src.rows), src.width
    offset = src.rows.start * width
    try:
        path = _local_path(src.url)
        if count == 0:
            clks = np.zeros((0, width), dtype=np.uint8)
        elif path is not None:
            clks = np.memmap(path, np.uint8, "r", offset=offset, shape=(count, width))
        else:
            import fsspec

            with fsspec.open(src.url, "rb") as fh:
                fh.seek(offset)
                data = fh.read(count * width)
            clks = np.frombuffer(data, np.uint8).reshape(count, width)
    except (OSError, ValueError) as exc:
        raise ClusterError(f"a Dask worker cannot read {src.url}: {exc}") from None
    return clks if src.columns == width else clks[:, : src.columns]


def check_file(url: str, size: int, sha256: str) -> str:
    """'' if the file at `url` has this size and sha256, else what is wrong (on a worker)."""
    import fsspec

    digest = hashlib.sha256()
    read = 0
    try:
        with fsspec.open(url, "rb") as fh:
            while block := fh.read(READ_BLOCK):
                digest.update(block)
                read += len(block)
    except OSError as exc:
        return f"a Dask worker cannot read {url}: {exc}"
    if read != size:
        return f"{url} holds {read} bytes on the workers' storage, the upload {size}"
    if digest.hexdigest() != sha256:
        return f"{url} on the workers' storage differs from the upload (sha256)"
    return ""


def compare_remote(
    task: Task,
    a: SharedRows | Clks,
    b: SharedRows | Clks,
    threshold: float,
    lsh: blocking_.LshPlan | blocking_.PairPlans | None,
    build: str,
) -> TaskResult:
    """One task on a worker: its rows (read here, or scattered to it) in, candidates out;
    refused by a worker whose blindmatch is not the matcher's `build` (core.clusterbuild)."""
    refuse_other_build(build)
    keep_freed_memory()
    ra = read_rows(a) if isinstance(a, SharedRows) else a
    rb = read_rows(b) if isinstance(b, SharedRows) else b
    return run_task(task, ra, rb, threshold, lsh)


def _identity(x: object) -> object:
    return x


# -- the matcher's side ---------------------------------------------------------------------


class _Sources:
    """Where each task's rows come from: a file on shared storage, or a scattered slice."""

    def __init__(self, client: Client, job: CompareJob, base: str, tasks: Sequence[Task]):
        self.client = client
        self.job = job
        self.base = base.rstrip("/")
        self.scatter = base == SCATTER
        self.uses: Counter[Rows] = Counter(r for t in tasks for r in t.inputs)
        self.sent: dict[Rows, Future] = {}

    def url(self, f: ClkFile) -> str:
        return f"{self.base}/{f.upload_id}.bin"

    def get(self, rows: Rows) -> SharedRows | Future:
        if not self.scatter:
            assert self.job.files is not None
            f = self.job.files[rows.dataset]
            return SharedRows(self.url(f), rows, f.width, self.job.columns or f.width)
        if rows not in self.sent:
            data = np.ascontiguousarray(rows_of(self.job.datasets, rows))
            self.sent[rows] = self.client.scatter(data, hash=False)
        return self.sent[rows]

    def forget(self, rows: Rows) -> None:
        """A slice lost with a worker: send it again next time."""
        self.sent.pop(rows, None)

    def done_with(self, task: Task) -> None:
        for rows in task.inputs:
            self.uses[rows] -= 1
            if self.uses[rows] <= 0:
                self.sent.pop(rows, None)  # the cluster forgets it once no task needs it


class DaskExecutor:
    """A run's comparison tasks on a Dask cluster (see the module docstring)."""

    name = "dask"

    def __init__(self, settings: DaskSettings) -> None:
        settings.check()
        self.settings = settings

    def describe(self) -> str:
        s = self.settings
        how = "TLS" if s.secure else "plaintext"
        data = (
            "slices scattered by the matcher" if s.clks == SCATTER else f"upload files at {s.clks}"
        )
        return (
            f"batch runs compare on the Dask cluster at {s.scheduler} ({how}); workers read {data}"
        )

    def security(self) -> Security | None:
        if not self.settings.secure:
            return None
        from distributed.security import Security

        return Security(
            tls_ca_file=self.settings.tls_ca,
            tls_client_cert=self.settings.tls_cert,
            tls_client_key=self.settings.tls_key,
            require_encryption=True,
        )

    def _connect(self) -> Client:
        from distributed import Client

        s = self.settings
        try:
            client = Client(
                s.scheduler,
                security=self.security(),
                timeout=s.connect_timeout,
                set_as_default=False,
                name="blindmatch-matcher",
            )
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {s.scheduler} ({exc}); the run failed and "
                "nothing was stored: start it again once the cluster is up"
            ) from None
        try:
            client.wait_for_workers(1, timeout=s.workers_timeout)
        except (OSError, TimeoutError):
            client.close()
            raise ClusterError(
                f"the Dask cluster at {s.scheduler} has had no workers for "
                f"{s.workers_timeout:.0f} s; the run failed: start workers and run again"
            ) from None
        return client

    def compare(
        self, job: CompareJob, progress: Progress, tasks: TaskProgress
    ) -> tuple[list[Candidates], int]:
        if self.settings.clks != SCATTER and job.files is None:
            raise ClusterError("this run's CLKs are not in upload files the workers can read")
        client = self._connect()
        try:
            return self._compare(client, job, progress, tasks)
        except ClusterError:
            raise
        except Exception as exc:
            if client.status == "running":
                raise
            raise ClusterError(
                f"lost the Dask scheduler at {self.settings.scheduler} mid-run ({exc!r}); the run "
                "failed and nothing was stored: start it again once the cluster is back"
            ) from None
        finally:
            client.close(timeout=5)

    def _compare(
        self, client: Client, job: CompareJob, progress: Progress, tasks: TaskProgress
    ) -> tuple[list[Candidates], int]:
        s = self.settings
        lsh = job.lsh_plan()
        planned = plan_tasks(
            job.sizes,
            job.method,
            lsh,
            chunk_comparisons=s.task_comparisons,
            band_rows=int(s.task_comparisons * BAND_ROWS_PER_COMPARISON),
            min_bands=BANDS_PER_TASK,
        )
        nthreads = sum(client.nthreads().values())
        try:
            dashboard = client.dashboard_link
        except (KeyError, AttributeError):
            dashboard = "none (install bokeh on the scheduler for one)"
        log.info(
            "%d comparison tasks to the Dask cluster at %s (%d workers, %d threads); dashboard: %s",
            len(planned),
            s.scheduler,
            len(client.nthreads()),
            nthreads,
            dashboard,
        )
        build = check_workers(client)  # every worker runs the matcher's blindmatch
        sources = _Sources(client, job, s.clks, planned)
        if not sources.scatter:
            self._check_files(client, job, sources)
        # Small, shared by every task: held by the scheduler, recomputed if its worker dies.
        # A band task takes its pair's plan from the run's plans (not the map of pairs).
        if isinstance(lsh, blocking_.PairPlans):
            lsh = blocking_.PairPlans(lsh.plans, {}, {})
        plan = client.submit(_identity, lsh, key=f"blindmatch-plan-{secrets.token_hex(6)}")
        tally = Tally(planned, progress, tasks)
        shared = (job.threshold, plan, build)
        return combine(list(self._run(client, planned, sources, shared, tally, nthreads)))

    def _check_files(self, client: Client, job: CompareJob, sources: _Sources) -> None:
        assert job.files is not None
        checks = [
            client.submit(check_file, sources.url(f), f.rows * f.width, f.sha256, pure=False)
            for f in job.files
        ]
        problems = [p for p in client.gather(checks) if p]
        if problems:
            raise ClusterError(
                "the workers cannot use the matcher's upload files (--dask-clks "
                f"{self.settings.clks}): {'; '.join(problems)}"
            )

    def _run(
        self,
        client: Client,
        planned: Sequence[Task],
        sources: _Sources,
        shared: tuple[float, Future, str],  # every task's threshold, plan and build
        tally: Tally,
        nthreads: int,
    ) -> Iterator[TaskResult]:
        """Results of `planned`, at most ~2 tasks per worker thread in flight."""
        from distributed import as_completed

        token = secrets.token_hex(6)
        pending = as_completed(loop=client.loop)
        task_of: dict[object, tuple[int, Task, int]] = {}
        queue = iter(enumerate(planned))

        def submit(i: int, task: Task, attempt: int = 0) -> None:
            a, b = (sources.get(r) for r in task.inputs)
            fut = client.submit(
                compare_remote, task, a, b, *shared,
                key=f"blindmatch-compare-{token}-{i}-{attempt}", pure=False,
            )  # fmt: skip
            task_of[fut.key] = (i, task, attempt)
            pending.add(fut)

        def more(count: int) -> None:
            for i, task in _take(queue, count):
                submit(i, task)

        more(max(8, 2 * nthreads))
        for fut in pending:
            i, task, attempt = task_of.pop(fut.key)
            try:
                res = _result(fut)
            except CancelledError:
                if not sources.scatter or client.status != "running":
                    raise
                # A worker holding one of its scattered slices died: send them again.
                if attempt >= RESUBMITS:
                    raise ClusterError(
                        f"a task's scattered CLKs were lost {attempt} times; the run failed"
                    ) from None
                for rows in task.inputs:
                    sources.forget(rows)
                submit(i, task, attempt + 1)
                continue
            sources.done_with(task)
            tally.add(res)
            yield res
            more(1)


def _take(it: Iterator[tuple[int, Task]], count: int) -> list[tuple[int, Task]]:
    out = []
    for _ in range(count):
        nxt = next(it, None)
        if nxt is None:
            break
        out.append(nxt)
    return out


def _result(fut: Future) -> TaskResult:
    try:
        res: TaskResult = fut.result()
    except ClusterError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker":
            raise ClusterError(
                f"the Dask workers running one comparison task kept dying ({exc}); the run "
                "failed (are the workers out of memory? see docs/scale.md)"
            ) from None
        raise
    return res
