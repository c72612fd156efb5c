"""`prompt_line.read_line` on a real pseudo-terminal: a Ctrl-C at the prompt is raised even
when the kernel hands SIGINT to a thread other than the one waiting in readline, and the
signal state is as it was once the line is read."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

from conftest import ctrl_c_works

# The main thread blocks SIGINT, so the kernel delivers every Ctrl-C to the other thread:
# the case of a SIGINT caught while readline is not waiting in select().
CHILD = r"""
import signal, sys, threading, time
from deeprlm.prompt_line import read_line

threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
while True:
    try:
        line = read_line("p> ")
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        continue
    except EOFError:
        break
    print(f"got {line!r}", flush=True)
print("prod handler is the default:", signal.getsignal(signal.SIGURG) == signal.SIG_DFL, flush=True)
print("wakeup fd:", signal.set_wakeup_fd(-1), flush=True)
"""


class Pty:
    def __init__(self) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            ctrl_c_works()
            os.execv(sys.executable, [sys.executable, "-c", CHILD])
        self.pid, self.fd, self.screen = pid, fd, ""

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, f"{text!r} never showed:\n{self.screen}"
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.screen += os.read(self.fd, 4096).decode()
                except OSError:
                    break
        assert text in self.screen, self.screen
        self.screen = self.screen[self.screen.index(text) + len(text) :]

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())


def test_ctrl_c_at_the_prompt_is_raised_whichever_thread_the_kernel_picks():
    term = Pty()
    try:
        term.expect("p> ")
        term.type("first\n")
        term.expect("got 'first'")
        term.expect("p> ")  # typed earlier, a Ctrl-C could land in the print above
        for _ in range(3):
            term.type("half a li")
            term.expect("half a li")
            term.type("\x03")
            term.expect("interrupted", timeout=10)
            term.expect("p> ")
        term.type("second\n")
        term.expect("got 'second'")  # the dropped line does not come back
        term.expect("p> ")
        term.type("\x04")
        term.expect("prod handler is the default: True")
        term.expect("wakeup fd: -1")
    finally:
        os.kill(term.pid, 9)
        os.waitpid(term.pid, 0)
        os.close(term.fd)
