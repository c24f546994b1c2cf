"""Ctrl-C during a run: stop the running query at once, then abort like between queries.

Python runs its SIGINT handler only when the main thread executes bytecode; a DuckDB
query runs in C with the GIL released, so without help Ctrl-C waits for the query to end
(minutes), and a process started with SIGINT ignored (``seeknal run &`` in a script)
never stops.  For the run's duration this installs
a SIGINT handler and a wakeup pipe: the C-level handler writes to it immediately, and a
thread reading it asks the open engines to interrupt their queries.  The engine then rolls
the batch back and raises KeyboardInterrupt, which the CLI reports as ``Error: aborted``
(exit 130); the completed batches before it are recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def interrupting(stop: Callable[[], bool]) -> Iterator[None]:
    """Call ``stop`` from a thread whenever SIGINT arrives, while the block runs, and
    again from Python's handler, which raises ``KeyboardInterrupt`` unless ``stop`` says
    a running write will raise it itself (after its rollback, never midway).

    Outside the main thread (where signals cannot be handled) the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = os.pipe()  # a pipe, not a socketpair: importing socket costs ~3 ms a run
    os.set_blocking(writer, False)

    def on_sigint(signum: int, frame: object) -> None:
        if not stop():  # nothing running to stop at a safe point: abort here, as Python would
            raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                data = os.read(reader, 64)
            except OSError:
                return
            if not data:  # the writer was closed: the run is over
                return
            if signal.SIGINT in data:
                while stop():  # again while the write runs: its query may not have started yet
                    time.sleep(0.05)

    watcher = threading.Thread(target=watch, name="seeknal-sigint", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        if previous_handler is not None:  # None: set outside Python, nothing to restore
            signal.signal(signal.SIGINT, previous_handler)
        os.close(writer)
        watcher.join()
        os.close(reader)
