"""The run core: how one query is answered, one module per job.

    shared.py  the state every run of one query shares, and the one metered model call
    run.py     one run: its REPL, its events, how it ends
    loop.py    the turn loop: model reply -> code blocks -> REPL cells -> output -> next turn
    host.py    what the REPL's code may ask of its run: sub-calls and child runs

Everything here is async; the sync API runs it on a private event loop (see `deeprlm.rlm`).
"""

from deeprlm.engine.loop import Outcome, TurnLoop, Wording
from deeprlm.engine.run import Run
from deeprlm.engine.shared import SharedState

__all__ = ["Outcome", "Run", "SharedState", "TurnLoop", "Wording"]
