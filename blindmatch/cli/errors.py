"""The one place a failure becomes what the user reads and the exit status.

    exit 0    done
    exit 1    anything else that failed (a failed run, a missing clkhash)
    exit 2    bad local input or usage: a file, an option (argparse uses 2 too); a file
              or folder that cannot be opened as given (a folder for a file, say)
    exit 3    the matcher refused: wrong token, unknown project, a bad request
    exit 4    the matcher cannot be reached, or is busy for now
    exit 130  interrupted (Ctrl-C)
    exit 143  ended by SIGTERM (`kill`, `timeout`, a service manager's stop) while a
              command that cleans up after itself ran (`ends_at_sigterm`): as at Ctrl-C,
              its temporary files are deleted first

Every message is `Error: ...` on standard error; never a traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from blindmatch.client.errors import (
    BlindmatchError,
    BusyError,
    InputError,
    MatcherError,
    UnavailableError,
)

TERMINATED = 128 + signal.SIGTERM  # the exit status of a command ended by SIGTERM

# Most specific first: the first class an exception is an instance of decides.
EXIT_CODES: list[tuple[type[BlindmatchError], int]] = [
    (InputError, 2),
    (UnavailableError, 4),
    (BusyError, 4),
    (MatcherError, 3),
    (BlindmatchError, 1),
]

# clkhash's metadata caps cryptography<41 and bitarray<3 (releases with known
# vulnerabilities), so pip cannot install it beside blindmatch's own requirements;
# it runs unchanged on current ones and is installed without its pins. The Makefile
# installs this same release (tests/test_install.py checks they agree).
CLKHASH = "clkhash==0.18.3"
CLKHASH_HELP = (
    "this command needs clkhash, which pip does not install with blindmatch (its metadata "
    "caps cryptography<41 and bitarray<3; it runs on current ones). Install it with:\n"
    f"  pip install --no-deps {CLKHASH}\n"
    f"(into this environment: {sys.executable} -m pip install --no-deps {CLKHASH})"
)


# A file or folder given that cannot be used as given: bad local input (exit 2). Any other
# failure to read or write a named file (a full disk, say) exits 1.
LOCAL_INPUT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EEXIST,
     errno.ENAMETOOLONG, errno.ENOTEMPTY}
)  # fmt: skip


def exit_code(exc: BlindmatchError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(exc, cls))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised on the main thread by `sigterm_as_ctrl_c`'s handler: the command
    ends as at Ctrl-C (a service manager's or `kill`'s stop, said as such)."""


class _Held:
    """`sigterm_held`'s blocks open (on the main thread, where the handler runs) and whether
    a SIGTERM came meanwhile."""

    depth = 0
    came = False


def _terminate() -> None:
    forked = sys.modules.get("multiprocessing")
    for child in forked.active_children() if forked else ():
        child.terminate()  # (they would wait for work that no longer comes)
    raise Terminated


@contextmanager
def sigterm_held() -> Iterator[None]:
    """A block on the main thread that a SIGTERM (under `sigterm_as_ctrl_c`) does not cut: one
    that comes meanwhile raises `Terminated` as the block ends. For a temporary folder's
    making up to its name's being held where its clean-up finds it (cli/plotconfig.py), so
    that no signal lands between the two (a window, not a wait: keep the block short)."""
    _Held.depth += 1
    try:
        yield
    finally:
        _Held.depth -= 1
        if not _Held.depth and _Held.came:
            _Held.came = False
            _terminate()


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` (a KeyboardInterrupt) on the main
    thread, so its `finally` blocks run (`blindmatch demo` deletes its temporary folder); the
    handler before is put back after. Off the main thread (where a handler cannot be set:
    `main` run on a thread) SIGTERM is left as it is; in a process forked inside the block
    (clkhash's encoding workers) it ends the process as before, and so does Ctrl-C (SIGINT),
    without a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def _raise_terminated(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if _Held.depth:  # (raised as the block ends: `sigterm_held`)
            _Held.came = True
            return
        _terminate()

    def _interrupted(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked encoding worker: ends as at Ctrl-C, unsaid
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        signal.default_int_handler(signum, frame)

    before = signal.signal(signal.SIGTERM, _raise_terminated)
    # Ctrl-C at a terminal reaches every process of the command, clkhash's workers too, and
    # each printed its KeyboardInterrupt's traceback below "Interrupted.". Left as it is
    # where SIGINT is ignored (a background job) or has a handler of its own.
    before_int = signal.getsignal(signal.SIGINT)
    if before_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)
        if before_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, before_int)


def ends_at_sigterm(handler: Callable[[Any], int]) -> Callable[[Any], int]:
    """A command's handler that SIGTERM ends as Ctrl-C does (`sigterm_as_ctrl_c`): its
    temporary folders and files (a `with TemporaryDirectory`, a half-written file's
    `except BaseException`) are deleted on the way out, and `run` says "Terminated." and
    exits `TERMINATED`. Not for a command blocked on another thread's work (a SIGTERM
    the kernel hands to that thread would wait for the main thread to run Python again):
    these stop on their own signal handling (`serve`, matcher/server.py)."""

    @functools.wraps(handler)
    def ending(args: Any) -> int:
        with sigterm_as_ctrl_c():
            return handler(args)

    ending.ends_at_sigterm = True  # type: ignore[attr-defined]  # (docs/cli.md's list)
    return ending


def _terminated() -> int:
    print("Terminated.", file=sys.stderr, flush=True)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):  # fmt: skip
        # clkhash's feeder of its encoding workers (10,000 records a member and more),
        # stuck on a queue no worker reads now: the exit would wait for it for ever.
        sys.stdout.flush()
        os._exit(TERMINATED)
    return TERMINATED


def _interrupted() -> int:
    print("Interrupted.", file=sys.stderr, flush=True)
    clk = sys.modules.get("clkhash.clk")
    feed = getattr(clk, "iterable_to_queue", None)
    if feed is not None and any(t.is_alive() and getattr(t, "_target", None) is feed
                                for t in threading.enumerate()):  # fmt: skip
        # clkhash's feeder of its encoding workers (10,000 records and more), stuck on a
        # queue no worker reads now: the exit waited for it for ever (a Ctrl-C'd encode).
        forked = sys.modules.get("multiprocessing")
        for child in forked.active_children() if forked else ():
            child.terminate()
        sys.stdout.flush()
        os._exit(130)
    return 130


def say_error(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)


def run(command: Callable[[], int], argv: Sequence[str] | None = None) -> int:
    """Run a command (parsing its options, then its handler; `argv` its arguments, else
    sys.argv's); every failure the user can act on becomes a message. Help and usage errors
    exit through argparse, as usual."""
    try:
        code = int(command())
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe: a fault to show, not a reader that stopped
        # The reader went away (`blindmatch project list --json | head -c 100`): stop quietly,
        # as other tools do, and let nothing be flushed at exit into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except BlindmatchError as exc:
        say_error(str(exc))
        return exit_code(exc)
    except OSError as exc:
        # A local file the command could not open or write (a folder given for a file, a
        # file for a folder, no permission) that no reader named more precisely: one line.
        if exc.filename is None or isinstance(exc, ConnectionError):
            raise
        # A rename names its target second: the path the user gave.
        name = exc.filename2 if exc.filename2 is not None else exc.filename
        say_error(f"{name}: {exc.strerror or exc}")
        return 2 if exc.errno in LOCAL_INPUT_ERRNOS else 1
    except UnicodeEncodeError as exc:
        said = not_utf8(sys.argv[1:] if argv is None else argv)
        if said is None or "surrogates" not in exc.reason:
            raise
        say_error(said)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "clkhash":
            raise
        say_error(CLKHASH_HELP)
        return 1
    except Terminated:
        return _terminated()
    except KeyboardInterrupt:
        return _interrupted()


def not_utf8(argv: Sequence[str]) -> str | None:
    """The first argument given in bytes that are not UTF-8 (a terminal or script in another
    encoding; Python keeps them as surrogates), named by its option, for a value that failed
    where it is sent as text (a --purpose, a project name): it was a traceback. None: none
    is. (A path in such bytes opens: it fails nowhere.)"""
    for i, arg in enumerate(argv):
        byte = next((ord(c) - 0xDC00 for c in arg if "\udc80" <= c <= "\udcff"), None)
        if byte is None:
            continue
        if arg.startswith("--") and "=" in arg:
            name = arg.split("=", 1)[0]
        elif i and argv[i - 1].startswith("-") and not arg.startswith("-"):
            name = argv[i - 1]
        else:
            name = f"argument {i + 1}"
        return (
            f"{name}: holds byte 0x{byte:02X}, which is not UTF-8 text (the terminal or script "
            "passed it in another encoding): give it as UTF-8"
        )
    return None


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (AttributeError, OSError, ValueError):  # no file behind it
        return False
    return any(events & select.POLLERR for _, events in poller.poll(0))


def start_error(exc: OSError, listen: str, data_dir: str | Path | None = None) -> InputError:
    """A server's start that failed on an OSError, as the user reads it: the data dir that
    could not be made or opened named as `--data-dir` (a name too long, a folder under
    /proc), another file or folder that could not be (`--audit-key` in a folder that is not
    there, say) by its name, else the address (`rpc/listen.py`'s `cannot_listen`: the port
    is taken, or the address is not this machine's). Before, every one blamed `--listen`."""
    if not isinstance(exc.filename, (str, bytes, os.PathLike)):
        return InputError(f"--listen {listen}: {exc}")
    failed = Path(os.fsdecode(exc.filename))
    if data_dir is not None:
        root = Path(data_dir)
        if failed == root or root in failed.parents or failed in root.parents:
            return InputError(f"--data-dir {data_dir}: {exc.strerror or exc} ({failed})")
    return InputError(f"{failed}: {exc.strerror or exc} (nothing is listening)")
