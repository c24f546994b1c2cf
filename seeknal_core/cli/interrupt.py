"""Ctrl-C during a run: stop the running query at once, then abort like between queries.

Python runs its SIGINT handler only when the main thread executes bytecode; a DuckDB
query runs in C with the GIL released, so without help Ctrl-C waits for the query to end
(minutes), and a process started with SIGINT ignored (``seeknal run &`` in a script)
never stops.  For the run's duration this installs
a SIGINT handler and a wakeup pipe: the C-level handler writes to it immediately, and a
thread reading it asks the open engines to interrupt their queries.  The engine then rolls
the batch back and raises KeyboardInterrupt, which the CLI reports as ``Error: aborted``
(exit 130); the completed batches before it are recorded.

SIGTERM (a scheduler or ``kill`` stopping the job) is handled the same way, for the whole
command (``terminate_like_interrupt``): the query stops, the batch rolls back, and the CLI
prints ``Error: terminated (SIGTERM)`` and exits 143 (128 + 15), instead of dying silently
mid-write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

#: the signals a run stops on, as Ctrl-C
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: the stop signal that arrived last in this process (its number makes the exit code)
received: int | None = None


def _note(signum: int) -> None:
    global received
    received = signum


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt`` (noting it), as SIGINT
    does, so a command stopped by a scheduler unwinds and reports instead of dying
    mid-write.  A SIGTERM the process ignores or handles itself is left alone, and only
    the main thread can handle signals."""
    global received
    received = None
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        _note(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def interrupting(stop: Callable[[], bool]) -> Iterator[None]:
    """Call ``stop`` from a thread whenever SIGINT (or SIGTERM) arrives, while the block runs, and
    again from Python's handler, which raises ``KeyboardInterrupt`` unless ``stop`` says
    a running write will raise it itself (after its rollback, never midway).

    Outside the main thread (where signals cannot be handled) the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = os.pipe()  # a pipe, not a socketpair: importing socket costs ~3 ms a run
    os.set_blocking(writer, False)

    def on_sigint(signum: int, frame: object) -> None:
        _note(signum)
        if not stop():  # nothing running to stop at a safe point: abort here, as Python would
            raise KeyboardInterrupt

    wanted = [s for s in STOP_SIGNALS
              if s == signal.SIGINT or signal.getsignal(s) is not signal.SIG_IGN]
    previous_handlers = {s: signal.signal(s, on_sigint) for s in wanted}
    previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                data = os.read(reader, 64)
            except OSError:
                return
            if not data:  # the writer was closed: the run is over
                return
            if any(s in data for s in wanted):
                while stop():  # again while the write runs: its query may not have started yet
                    time.sleep(0.05)

    watcher = threading.Thread(target=watch, name="seeknal-sigint", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous_handlers.items():
            if handler is not None:  # None: set outside Python, nothing to restore
                signal.signal(signum, handler)
        os.close(writer)
        watcher.join()
        os.close(reader)
