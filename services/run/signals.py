"""Graceful stop on SIGINT / SIGTERM (Ctrl-C, `ray job stop`).

The first signal asks the driver to stop at the next iteration boundary: the iteration in flight finishes,
a checkpoint is written, the resume command printed, and the process exits with 128 + the signal number
(130 for SIGINT, 143 for SIGTERM, the shell's convention, so scripts see "stopped by a signal" rather than
success or a crash). A second signal stops at once: `StopNow` is raised in the main thread, out of
whatever the driver waits on; the last checkpoint on disk stays the resume point. It is a KeyboardInterrupt
because that is the one exception `ray.get` lets out of its wait (it swallows any other raised by a signal
handler, and re-raises a plain KeyboardInterrupt): callers read `StopRequest.forced` for the signal.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("crlhf")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(KeyboardInterrupt):
    """A second stop signal: leave at once (see the module doc for why a KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}")
        self.signum = signum


class StopRequest:
    """The signal that asked the run to stop (None: none yet)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced: int | None = None  # the second signal, once one came

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            self.forced = signum
            raise StopNow(signum)
        self.signum = signum
        log.warning("%s: stopping after the current iteration (checkpoint, then exit %d); send it again to stop at once",
                    signal.Signals(signum).name, self.exit_code)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers for the block (main thread only; elsewhere signals keep their handlers)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
