"""The suite (imported before tests/conftest.py, in pytest's process and each xdist worker).

numpy's OpenBLAS on one thread in every process of a run, unless the environment says
otherwise: set here, before anything imports numpy (OpenBLAS reads it as it loads), and
inherited by the workers and every process a test starts. `make test` runs two workers on
two cores, each busy; OpenBLAS's own threads, one per core in each process, only queued
behind them and spun while they waited: tests/test_privacy_twoserver.py's decoy check took
16.8 s of CPU with them and 14.9 s without, for the same figures (docs/architecture.md
"Tests and their run time"). The kernels' and the matcher's own threads are not numpy's.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
