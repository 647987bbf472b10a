"""The scrub: every stored upload the matcher still needs, checked against the SHA-256 it
was acknowledged with, in the background, so damage is found before a run needs the file.

At start-up every needed file is looked at (present, of the size its row promises: a
stat each), then the first full pass hashes them all, and another every `interval`
seconds, at most `rate` bytes a second so that the scrub never competes with runs for
the disk (its cost is in docs/operations.md, *Verification and the scrub*). Damage is
logged at ERROR with the upload, its member and what to do; a run would refuse the file
anyway (`Store.verified_clks`), so the scrub only brings the news forward.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from blindmatch.matcher.domain import DAY, Upload, counted
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.storage.upload_store import upload_damage

log = logging.getLogger("blindmatch.matcher")

SCRUB_INTERVAL = DAY  # seconds between full passes
SCRUB_RATE = 64 << 20  # bytes hashed a second, at most


@dataclass
class ScrubReport:
    uploads: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    damaged: list[tuple[Upload, str]] = field(default_factory=list)


class Scrubber:
    """Checks every needed upload at start-up (sizes) and every `interval` seconds (hashes)."""

    def __init__(
        self, store: Store, interval: float = SCRUB_INTERVAL, rate: float = SCRUB_RATE
    ) -> None:
        self.store = store
        self.interval = interval
        self.rate = rate
        self.last: ScrubReport | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="blindmatch-scrub", daemon=True)

    def start(self) -> None:
        self.scrub(hash_files=False)
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def scrub(self, *, hash_files: bool = True) -> ScrubReport:
        """One pass over every needed upload; logs and returns what it found."""
        report = ScrubReport()
        started = time.monotonic()

        def pace(n: int) -> None:
            report.bytes_hashed += n
            if self.rate > 0:  # sleep until the pass is back under `rate` bytes a second
                ahead = report.bytes_hashed / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    self._stopped.wait(ahead)

        for upload in self.store.needed_upload_rows():
            if self._stopped.is_set():
                break
            path = self.store.files.clk_file(upload.id)
            reason = upload_damage(path, upload, hashed=hash_files, pace=pace)
            report.uploads += 1
            if reason is not None and self.store.is_needed(upload.id):  # not replaced meanwhile
                report.damaged.append((upload, reason))
                log.error(
                    "scrub: upload %s of %s/%s (%s) is damaged: %s; no run will use it until "
                    "%s uploads again",
                    upload.id,
                    upload.project,
                    upload.member,
                    path,
                    reason,
                    upload.member,
                )
        report.seconds = time.monotonic() - started
        self.last = report
        log.info(
            "scrub: %s %s (%.0f MiB hashed) in %.1f s; %d damaged",
            counted(report.uploads, "upload"),
            "hashed" if hash_files else "present, of their sizes,",
            report.bytes_hashed / (1 << 20),
            report.seconds,
            len(report.damaged),
        )
        return report

    def _loop(self) -> None:
        wait = 0.0  # the first full pass right after start-up
        while not self._stopped.wait(wait):
            try:
                self.scrub()
            except Exception:  # a failed pass must not end the thread; the next one retries
                log.exception("scrub failed")
            wait = self.interval
