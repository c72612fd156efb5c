"""Reading one line at a terminal with `input()` (and so `readline`) without losing Ctrl-C.

CPython's readline waits for keys in `select()` and looks for signals only when that call
is interrupted. A SIGINT that lands while readline is handling the keys before it (typing,
a paste), or that the kernel hands to another of the process's threads, is recorded and
then forgotten until the next key: the user presses Ctrl-C and nothing happens.

`read_line` closes that gap. While it waits, the signal module writes each caught signal's
number to a pipe (`signal.set_wakeup_fd`); a watcher thread that reads SIGINT there prods
the main thread with a signal whose handler does nothing (SIGURG, which is otherwise
ignored) until the KeyboardInterrupt has been raised. A prod that finds the main thread in
`select()` interrupts it, and readline then raises the recorded SIGINT.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

PROD = signal.SIGURG
PROD_EVERY_S = 0.05
# A prod is needed only for the moment readline spends between keys and select(); one that
# has not worked by then never will (SIGINT's handler is not the default one).
PROD_FOR_S = 2.0


class _Watcher:
    """One per process, started at the first read. The pipe stays open for the process's
    life, so a wakeup fd left pointing at it (a second Ctrl-C in the middle of putting
    things back) is harmless, and a prod after the read is over meets SIGURG's default:
    ignored."""

    def __init__(self) -> None:
        self.main_thread = threading.main_thread().ident
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        # Set while no line is being read; a Ctrl-C then is not the prompt's to deliver.
        self.disarmed = threading.Event()
        self.disarmed.set()
        threading.Thread(target=self._watch, name="deeprlm-prompt", daemon=True).start()

    def _watch(self) -> None:
        while True:
            numbers = os.read(self.read_end, 512)
            if signal.SIGINT in numbers:
                self._prod()

    def _prod(self) -> None:
        # Until the KeyboardInterrupt ends the read and disarms the watcher.
        for _ in range(int(PROD_FOR_S / PROD_EVERY_S)):
            if self.disarmed.is_set() or self.main_thread is None:
                return
            signal.pthread_kill(self.main_thread, PROD)
            if self.disarmed.wait(PROD_EVERY_S):
                return

    def arm(self) -> None:
        self.disarmed.clear()

    def disarm(self) -> None:
        self.disarmed.set()


_watcher: _Watcher | None = None


def _forget_watcher() -> None:
    global _watcher
    _watcher = None  # a forked child has the pipe but not the thread


os.register_at_fork(after_in_child=_forget_watcher)


def _do_nothing(signum: int, frame: Any) -> None:
    pass


def read_line(prompt: str) -> str:
    """`input(prompt)`, with Ctrl-C raised as KeyboardInterrupt however it is timed, and
    EOFError at Ctrl-D as `input` does. Off the main thread, where signal handlers cannot be
    set, this is plain `input`."""
    global _watcher
    if threading.current_thread() is not threading.main_thread():
        return input(prompt)
    if _watcher is None:
        _watcher = _Watcher()
    watcher = _watcher
    previous_prod = signal.getsignal(PROD)
    previous_fd = -1
    try:
        signal.signal(PROD, _do_nothing)
        previous_fd = signal.set_wakeup_fd(watcher.write_end, warn_on_full_buffer=False)
        watcher.arm()
        return input(prompt)
    finally:
        watcher.disarm()
        signal.set_wakeup_fd(previous_fd)
        if previous_prod is not None:  # None: set outside Python, cannot be put back
            signal.signal(PROD, previous_prod)
