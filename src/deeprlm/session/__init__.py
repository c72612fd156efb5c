"""Sessions: one context and one REPL kept across many questions, saved and reopened.

core.py    `Session`: asking, budgets, the REPL it keeps, saving and reopening
store.py   a saved session on disk: its files, written atomically, read back checked
thread.py  the event loop a session lives on, in a thread of its own
"""

from deeprlm.session.core import Session, rlm_from
from deeprlm.session.store import QuestionRecord, read_session, sessions_dir

__all__ = ["QuestionRecord", "Session", "read_session", "rlm_from", "sessions_dir"]
