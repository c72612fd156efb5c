"""Sessions through the API, against a real local HTTP server: questions that build on each
other's variables (in process and in the sandbox), the recap the root sees, saving and
reopening (in a new process too), budgets per question and per session, questions that
fail or are cancelled, and the bad input and damaged files a saved session can meet."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pydantic
import pytest

from deeprlm import (
    RLM,
    CostLimitError,
    InputError,
    LMError,
    ScriptedLM,
    Session,
    SessionError,
    TokenLimitError,
)
from deeprlm.lm.openai_compat import OpenAICompatibleLM
from deeprlm.session.store import SESSION_FILE
from deeprlm.usage import Price

from conftest import outputs, repl
from fake_server import FakeReply, last_user_text
from session_script import QuestionScript, deeprlm

KINDS = ["inprocess", "sandbox"]
CONTEXT = "\n".join(f"{name}: {score}" for name, score in [("ada", 3), ("bo", 5), ("cy", 4)])


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("DEEPRLM_HOME", str(path))
    return path


def three_questions() -> QuestionScript:
    """Q1 builds `scores` from the context; Q2 and Q3 use it without reading the context."""
    return QuestionScript(
        {
            "parse the scores": [
                repl(
                    "scores = {n: int(s) for n, s in (l.split(': ') for l in context.splitlines())}"
                    "\nprint(len(scores))"
                ),
                "FINAL(3 scores parsed)",
            ],
            "who scored best?": [
                repl("best = max(scores, key=scores.get)\nprint(best)"),
                lambda body: f"FINAL({outputs(last_user_text(body))[0]})",
            ],
            "what is the total?": [
                repl("print(sum(scores.values()), best)"),
                lambda body: f"FINAL({outputs(last_user_text(body))[0]})",
            ],
        }
    )


@pytest.mark.parametrize("kind", KINDS)
def test_questions_build_on_the_variables_of_earlier_ones(chat_server, kind):
    script = three_questions()
    server = chat_server(script)
    rlm = RLM("openai/m", base_url=server.url, repl=kind)
    with rlm.session(CONTEXT) as session:
        first = session.ask("parse the scores")
        second = session.ask("who scored best?")
        third = session.ask("what is the total?")
        assert [first.answer, second.answer, third.answer] == ["3 scores parsed", "bo", "12 bo"]
        assert session.variables() == {"scores": "dict", "best": "str"}
        history = session.history
    assert [r.query for r in history] == [
        "parse the scores",
        "who scored best?",
        "what is the total?",
    ]
    assert [r.status for r in history] == ["answered"] * 3
    assert [r.run_id for r in history] == ["q1.run0", "q2.run0", "q3.run0"]
    assert all(r.usage.total.calls == 2 for r in history)
    # The second question's root is told what the first found and which variables exist,
    # not the first question's conversation.
    recap = script.first_prompt("who scored best?")
    assert "1. Q: parse the scores\n   A: 3 scores parsed" in recap
    assert "Variables in the REPL: scores (dict)." in recap
    assert "scores = {n: int(s)" not in recap
    third_prompt = script.first_prompt("what is the total?")
    assert "2. Q: who scored best?\n   A: bo" in third_prompt
    assert "scores (dict), best (str)" in third_prompt


def test_the_async_api_from_several_event_loops_and_threads(chat_server):
    script = three_questions()
    server = chat_server(script)
    session = RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT)
    seen: list[str] = []

    async def ask(query: str) -> str:
        loop = asyncio.get_running_loop()

        def on_event(event) -> None:
            # Events reach the caller on its own loop.
            assert asyncio.get_running_loop() is loop
            seen.append(event.type)

        return (await session.aask(query, on_event=on_event)).answer

    # asyncio.run makes a new loop each time: the session's REPL lives on its own.
    assert asyncio.run(ask("parse the scores")) == "3 scores parsed"
    assert asyncio.run(ask("who scored best?")) == "bo"
    assert session.ask("what is the total?").answer == "12 bo"
    asyncio.run(session.aclose())
    assert seen.count("run_started") == 2 and seen[-1] == "run_ended"
    with pytest.raises(InputError, match="closed"):
        session.ask("who scored best?")


def test_questions_on_one_session_run_one_at_a_time(chat_server):
    script = QuestionScript(
        {
            "slow one": [repl("import time\ntime.sleep(0.3)\nmark = 'slow'"), "FINAL(slow done)"],
            "fast one": [repl("print(mark)"), lambda b: f"FINAL({outputs(last_user_text(b))[0]})"],
        }
    )
    server = chat_server(script)
    session = RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT)

    async def both() -> list[str]:
        slow = asyncio.ensure_future(session.aask("slow one"))
        await asyncio.sleep(0.05)
        fast = asyncio.ensure_future(session.aask("fast one"))
        return [(await slow).answer, (await fast).answer]

    # The second waits for the first: it sees the variable the first made.
    assert asyncio.run(both()) == ["slow done", "slow"]
    session.close()


@pytest.mark.parametrize("kind", KINDS)
def test_saved_then_reopened_in_a_new_process(chat_server, tmp_path, home, kind):
    script = QuestionScript(
        {
            "index the words": [
                repl("index = {w: i for i, w in enumerate(context.split())}\nprint(len(index))"),
                "FINAL(indexed)",
            ],
            "where is gamma?": [
                repl("print(index['gamma'])"),
                lambda body: f"FINAL(at {outputs(last_user_text(body))[0]})",
            ],
        }
    )
    server = chat_server(script)
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta gamma delta")
    rlm = RLM("openai/m", base_url=server.url, repl=kind)
    with rlm.session(doc) as session:
        assert session.ask("index the words").answer == "indexed"
        folder = session.save()
        session_id = session.id
    assert folder == home / "sessions" / session_id
    saved = json.loads((folder / SESSION_FILE).read_text())
    assert saved["context"]["paths"] == [str(doc)] and saved["variables"]["kept"] == ["index"]
    assert not (folder / "context.json").exists()  # reloaded from its file, not copied

    done = deeprlm("ask", "where is gamma?", "--session", session_id, "--json", "-q", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "at 2"
    # The new process saved the session again, with both questions.
    reopened = Session.open(session_id, RLM("openai/m", base_url=server.url, repl=kind))
    assert [r.answer for r in reopened.history] == ["indexed", "at 2"]
    assert reopened.variables() == {"index": "dict"}
    reopened.close()


def test_a_context_given_as_a_value_is_stored_with_the_session(chat_server):
    script = three_questions()
    server = chat_server(script)
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        session.ask("parse the scores")
        folder = session.save()
        session_id = session.id
    assert json.loads((folder / "context.json").read_text()) == {"context": CONTEXT}
    # Reopened with the RLM the file describes: models, server and settings.
    with Session.open(session_id) as session:
        assert session.rlm.settings.repl == "inprocess"
        assert session.ask("who scored best?").answer == "bo"


def test_what_cannot_be_kept_is_named_and_the_root_is_told(chat_server):
    script = QuestionScript(
        {
            "make things": [
                repl("kept = [1, 2]\ndef helper(x):\n    return x\nhandle = open('/dev/null')"),
                "FINAL(made)",
            ],
            "what is left?": [repl("print(kept)"), "FINAL(kept)"],
            "still there?": [repl("print(helper(1))"), "FINAL(yes)"],
        }
    )
    server = chat_server(script)
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        session.ask("make things")
        session.save()
        assert set(session.lost) == {"helper", "handle"}
        assert "function cannot be kept" in session.lost["helper"]
        # In this process they are still there: the root is not told otherwise.
        session.ask("still there?")
        assert "Lost when" not in script.first_prompt("still there?")
        session_id = session.id
    with Session.open(session_id) as session:
        session.start()
        assert set(session.lost) == {"helper", "handle"}
        assert session.variables() == {"kept": "list"}
        session.ask("what is left?")
    prompt = script.first_prompt("what is left?")
    assert "Lost when the session was reopened: " in prompt and "helper (function" in prompt


def test_the_changed_context_is_refused_unless_rebound(chat_server, tmp_path):
    script = three_questions()
    script.turns["how many now?"] = [
        repl("print(len(scores), len(context.splitlines()))"),
        lambda body: f"FINAL({outputs(last_user_text(body))[0]})",
    ]
    server = chat_server(script)
    doc = tmp_path / "scores.txt"
    doc.write_text(CONTEXT)
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(doc) as session:
        session.ask("parse the scores")
        session.save()
        session_id = session.id
    doc.write_text(CONTEXT + "\ndee: 9")
    with pytest.raises(InputError, match="context files changed since it was saved") as caught:
        Session.open(session_id)
    assert "\n" not in str(caught.value) and "rebind" in str(caught.value)
    with Session.open(session_id, rebind=True) as session:
        assert session.info.chars == len(CONTEXT) + 7
        # `scores` was made from the old text and is still there; the new text is context.
        assert session.ask("how many now?").answer == "3 4"
        session.save()
    with Session.open(session_id) as session:  # saved with the new hash: no refusal now
        assert len(session.history) == 2


def test_a_damaged_session_file_is_moved_aside_and_reported(chat_server):
    server = chat_server(three_questions())
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        session.ask("parse the scores")
        folder = session.save()
        session_id = session.id
    path = folder / SESSION_FILE
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # cut short, as by a full disk
    with pytest.raises(SessionError, match="damaged") as caught:
        Session.open(session_id)
    message = str(caught.value)
    assert "\n" not in message and "moved aside" in message
    aside = [p for p in folder.iterdir() if p.name.startswith(f"{SESSION_FILE}.corrupt-")]
    assert len(aside) == 1 and aside[0].read_text() == text[: len(text) // 2]
    assert not path.exists()
    with pytest.raises(InputError, match="no saved session"):
        Session.open(session_id)
    # A file with the wrong shape is damaged too, not a crash.
    path.write_text(json.dumps({"format": 1, "id": session_id, "rlm": "x"}))
    with pytest.raises(SessionError, match="damaged"):
        Session.open(session_id)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damaged", ["scores.pickle", "index.json"])
def test_damaged_saved_variables_are_named_not_dropped(chat_server, kind, damaged):
    server = chat_server(three_questions())
    rlm = RLM("openai/m", base_url=server.url, repl=kind)
    with rlm.session(CONTEXT) as session:
        session.ask("parse the scores")
        folder = session.save()
        session_id = session.id
    [variables] = folder.glob("vars-*")
    (variables / damaged).write_bytes(b"\x80\x05 not what was saved")
    with Session.open(session_id, rlm) as session:
        session.start()
        assert "could not be loaded again" in session.lost["scores"]
        assert "scores" not in session.variables()


@pytest.mark.parametrize("bad", ["../escape", "/etc", "a/b", ".hidden", "", "x" * 65])
def test_a_session_id_cannot_leave_the_sessions_folder(bad, home):
    with pytest.raises(InputError, match="session id"):
        Session.open(bad)
    with pytest.raises(InputError, match="session id"):
        RLM(ScriptedLM(["FINAL(x)"])).session("text", session_id=bad)
    assert not home.exists()


def test_a_new_session_does_not_take_the_id_of_a_saved_one(chat_server):
    server = chat_server(three_questions())
    rlm = RLM("openai/m", base_url=server.url, repl="inprocess")
    with rlm.session(CONTEXT, session_id="mine") as session:
        session.save()
    with pytest.raises(InputError, match="exists already"):
        rlm.session(CONTEXT, session_id="mine")


def test_one_process_at_a_time_has_a_session_open(chat_server, home):
    server = chat_server(three_questions())
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        session.ask("parse the scores")
        session.save()
        done = deeprlm("ask", "who scored best?", "--session", session.id, "-q", home=home)
        assert done.returncode == 1
        assert "open in another process" in done.stderr and len(done.stderr.splitlines()) == 1
        with pytest.raises(SessionError, match="open in another process"):
            Session.open(session.id)
    with Session.open(session.id) as reopened:  # closed: free again
        assert len(reopened.history) == 1


# --- budgets -------------------------------------------------------------------------------


def two_turn_root() -> ScriptedLM:
    """Each question: one turn of code, then the answer. Usage is the project's estimate
    of what the model read and wrote, as a provider would count it."""

    def reply(messages) -> str:
        done = any(m["role"] == "assistant" for m in messages)
        return "FINAL(done)" if done else repl("x = 1")

    return ScriptedLM(reply, name="priced")


def test_a_budget_per_question():
    root = two_turn_root()
    with RLM(root, repl="inprocess").session("text") as session:
        with pytest.raises(TokenLimitError) as caught:
            session.ask("q1", max_tokens=50)
        assert caught.value.result.status == "limit"
        assert str(caught.value).startswith("token budget reached")
        # The next question has the session's settings again: no limit.
        assert session.ask("q2").answer == "done"
        assert [r.status for r in session.history] == ["limit", "answered"]
        # Refused before it was sent: its prompt alone is over 50 tokens.
        assert session.history[0].usage.total.tokens == 0
        assert session.history[1].usage.total.calls == 2
        with pytest.raises(InputError, match="repl is fixed for the session"):
            session.ask("q3", repl="sandbox")
        with pytest.raises(InputError, match="unknown setting"):
            session.ask("q3", max_turns=3)


def ask_until_refused(session: Session, limit: int = 12) -> Exception:
    for _ in range(limit):
        try:
            session.ask("another")
        except Exception as err:
            return err
    raise AssertionError("the session's budget never ran out")


def test_a_budget_per_session_spans_its_questions():
    root = two_turn_root()
    rlm = RLM(root, repl="inprocess", max_reply_tokens=50, session_max_tokens=5_000)
    with rlm.session("text") as session:
        assert session.ask("q1").answer == "done"
        assert session.ask("q2").answer == "done"
        err = ask_until_refused(session)
        assert isinstance(err, TokenLimitError)
        message = str(err)
        assert message.startswith("session token budget reached: ")
        assert message.endswith(f"of 5,000 used across {len(session.history)} questions")
        assert err.result.status == "limit" and err.result.error == message
        # However the questions fell, the session stayed within its total.
        spent = session.usage.total.tokens
        assert 3_000 < spent <= 5_000
        calls = len(root.calls)
        with pytest.raises(TokenLimitError, match="session token budget reached"):
            session.ask("one more")
        assert len(root.calls) == calls  # refused before any model call
        assert session.usage.total.tokens == spent


def test_a_usd_budget_per_session_and_a_smaller_one_per_question():
    root = two_turn_root()
    rlm = RLM(
        root,
        repl="inprocess",
        max_reply_tokens=50,
        prices={"priced": Price(input=1_000.0, output=1_000.0)},  # $1 per 1,000 tokens
        session_max_usd=5.0,
    )
    with rlm.session("text") as session:
        assert session.ask("q1").answer == "done"
        # The question's own budget is smaller than what the session has left: it binds,
        # and says so in its own words.
        with pytest.raises(CostLimitError, match=r"^cost budget reached") as caught:
            session.ask("q2", max_usd=0.5)
        assert caught.value.result.status == "limit"
        # Then the session's total binds: each question gets what is left, until nothing is.
        err = ask_until_refused(session)
        assert isinstance(err, CostLimitError)
        assert str(err).startswith("session cost budget reached: $")
        assert session.usage.total.usd <= 5.0


def test_session_budgets_need_prices_for_usd():
    with pytest.raises(InputError, match="price"):
        RLM(ScriptedLM(["FINAL(x)"], name="unpriced-model"), session_max_usd=1.0)


# --- failures and cancels --------------------------------------------------------------------


def test_a_question_that_fails_midway_leaves_the_session_usable(chat_server):
    script = QuestionScript(
        {
            "parse the scores": three_questions().turns["parse the scores"],
            "this one breaks": [
                repl("partial = sorted(scores)\nanswer['content'] = 'half done'"),
                FakeReply(status=400, text="the provider refused"),
            ],
            "who scored best?": three_questions().turns["who scored best?"],
        }
    )
    server = chat_server(script)
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        session.ask("parse the scores")
        with pytest.raises(LMError) as caught:
            session.ask("this one breaks")
        result = caught.value.result
        assert result.status == "error" and result.answer == "half done"
        assert result.usage.total.calls == 1
        # The REPL is intact: what the failed question made is there, and the next one works.
        assert session.variables() == {"scores": "dict", "partial": "list"}
        assert session.ask("who scored best?").answer == "bo"
        assert [r.status for r in session.history] == ["answered", "error", "answered"]
        assert session.history[1].answer == "half done"
    assert "2. Q: this one breaks\n   A [error]: half done" in script.first_prompt(
        "who scored best?"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancelled_question_leaves_the_session_usable(chat_server, kind):
    script = QuestionScript(
        {
            "parse the scores": three_questions().turns["parse the scores"],
            "slow": [
                repl(
                    "import time\nbefore = 1\nend = time.time() + 30\n"
                    "while time.time() < end:\n    pass\nafter = 1"
                ),
                "FINAL(never)",
            ],
            "who scored best?": three_questions().turns["who scored best?"],
        }
    )
    server = chat_server(script)
    session = RLM("openai/m", base_url=server.url, repl=kind).session(CONTEXT)

    async def main() -> None:
        await session.aask("parse the scores")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.aask("slow"), 1.0)
        assert (await session.aask("who scored best?")).answer == "bo"

    asyncio.run(main())
    assert [r.status for r in session.history] == ["answered", "cancelled", "answered"]
    assert "scores" in session.variables() and "after" not in session.variables()
    session.close()


def test_a_sandbox_that_cannot_start_ends_the_question_not_the_session(monkeypatch):
    from deeprlm.repl.sandbox import repl as sandbox_repl

    root = ScriptedLM([repl("x = 1"), "FINAL(fine)"])
    session = RLM(root, repl="sandbox").session("text")
    monkeypatch.setattr(sandbox_repl.sys, "platform", "darwin")
    with pytest.raises(Exception, match="the sandbox needs Linux") as caught:
        session.ask("q1")
    assert caught.value.result.status == "error"
    monkeypatch.setattr(sandbox_repl.sys, "platform", "linux")
    assert session.ask("q2").answer == "fine"
    session.close()


# --- attacks on a saved session ------------------------------------------------------------


def test_a_symlink_the_code_plants_in_its_snapshot_is_not_followed_on_save(chat_server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's private key")
    script = QuestionScript({"one": [repl("x = 1"), "FINAL(ok)"]})
    server = chat_server(script)
    session = RLM("openai/m", base_url=server.url, repl="sandbox").session(CONTEXT)
    session.start()
    state = session._repl.repl._workspace.state  # the worker's snapshot folder, as it sees it
    script.turns["plant"] = [
        repl(
            "import os\n"
            f"os.unlink({state!r} + '/x.pickle')\n"
            f"os.symlink({str(secret)!r}, {state!r} + '/x.pickle')"
        ),
        "FINAL(planted)",
    ]
    session.ask("one")
    session.ask("plant")  # `x` is unchanged, so the worker leaves its "pickle" as planted
    folder = session.save()
    session.close()
    for path in folder.rglob("*"):
        if path.is_file():
            assert "private key" not in path.read_bytes().decode("utf-8", "replace"), path
    assert "a symlink" in session.lost["x"]


def test_variables_the_sandbox_saved_are_not_loaded_in_process(chat_server, tmp_path):
    marker = tmp_path / "ran-in-the-host"
    script = QuestionScript(
        {
            "one": [
                repl(
                    "import os\n"
                    "class Trap:\n"
                    "    def __reduce__(self):\n"
                    f"        return (os.system, ('touch {marker}',))\n"
                    "trap = Trap()\nplain = [1, 2]"
                ),
                "FINAL(ok)",
            ],
        }
    )
    server = chat_server(script)
    with RLM("openai/m", base_url=server.url, repl="sandbox").session(CONTEXT) as session:
        session.ask("one")
        session.save()
        session_id = session.id
    # Unpickling `trap` runs os.system: in the host, that is the model's code out of the box.
    in_process = RLM("openai/m", base_url=server.url, repl="inprocess")
    with Session.open(session_id, in_process) as reopened:
        reopened.start()
        assert not marker.exists()
        assert "loaded only in one" in reopened.lost["trap"]
        assert set(reopened.lost) >= {"trap", "plain"}
    # In a sandbox they load, and the trap runs where the code may run: os.system's exit
    # status takes its place, and the host's file system never saw it.
    with Session.open(session_id) as reopened:
        reopened.start()
        assert reopened.variables() == {"trap": "int", "plain": "list"}
    assert not marker.exists()


def test_the_session_file_holds_no_key(chat_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    server = chat_server(three_questions())
    rlm = RLM("openai/m", base_url=server.url, api_key="sk-also-secret", repl="inprocess")
    with rlm.session(CONTEXT) as session:
        session.ask("parse the scores")
        folder = session.save()
    for path in folder.rglob("*"):
        if path.is_file():
            assert b"secret" not in path.read_bytes()
    assert os.stat(folder).st_mode & 0o077 == 0


def test_a_model_object_needs_the_rlm_to_reopen():
    with RLM(ScriptedLM(["FINAL(x)"]), repl="inprocess").session("text") as session:
        session.ask("q")
        session.save()
        session_id = session.id
    with pytest.raises(InputError, match="model object"):
        Session.open(session_id)
    with Session.open(session_id, RLM(ScriptedLM(["FINAL(y)"]), repl="inprocess")) as session:
        assert session.ask("q2").answer == "y"


def test_paths_as_the_context_and_the_names_the_model_saw(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("second")
    monkeypatch.chdir(tmp_path)
    root = ScriptedLM([repl("print(sorted(context))"), "FINAL(seen)"])
    with RLM(root, repl="inprocess").session([Path("a.txt"), Path("docs")]) as session:
        session.ask("q")
        session.save()
        session_id = session.id
    assert outputs(root.calls[1][-1]["content"]) == ["['a.txt', 'docs/b.txt']"]
    monkeypatch.chdir(Path("/"))  # reopened from elsewhere: same files, same names
    root = ScriptedLM([repl("print(sorted(context))"), "FINAL(seen)"])
    with Session.open(session_id, RLM(root, repl="inprocess")) as session:
        session.ask("q again")
    assert outputs(root.calls[1][-1]["content"]) == ["['a.txt', 'docs/b.txt']"]


def test_a_thread_left_running_cannot_call_models_between_questions(chat_server):
    script = QuestionScript(
        {
            "start a thread": [
                repl(
                    "import threading, time\nseen = []\n"
                    "def later():\n"
                    "    time.sleep(0.2)\n"
                    "    try:\n"
                    "        seen.append(llm_query('hello'))\n"
                    "    except Exception as err:\n"
                    "        seen.append(f'{type(err).__name__}: {err}')\n"
                    "threading.Thread(target=later).start()"
                ),
                "FINAL(started)",
            ],
            "what did it see?": [
                repl("print(seen)"),
                lambda body: f"FINAL({outputs(last_user_text(body))[0]})",
            ],
        }
    )
    server = chat_server(script)
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        session.ask("start a thread")
        time.sleep(1.0)  # between questions: the thread's call has nobody to answer it
        answer = session.ask("what did it see?").answer
    assert answer == "['RuntimeError: llm_query: no question is being answered now']"
    assert len(server.requests) == 4  # two root turns per question; no sub-call was made


def test_sessions_are_independent_and_run_side_by_side(chat_server):
    # Each cell waits at a barrier for the other session's cell: they pass only if both
    # run at the same time (one after the other, the first would time out).
    meet = (
        "import builtins, threading\n"
        "barrier = builtins.__dict__.setdefault('_test_barrier', threading.Barrier(2))\n"
        "barrier.wait(timeout=20)\n"
        "del barrier\n"
        "mine = context[:5]"
    )
    script = QuestionScript(
        {
            "remember": [repl(meet), "FINAL(ok)"],
            "recall": [
                repl("print(mine)"),
                lambda body: f"FINAL({outputs(last_user_text(body))[0]})",
            ],
        }
    )
    server = chat_server(script)
    rlm = RLM("openai/m", base_url=server.url, repl="inprocess")
    one, two = rlm.session("first context"), rlm.session("second context")

    async def both() -> list[str]:
        met = await asyncio.gather(one.aask("remember"), two.aask("remember"))
        assert [r.answer for r in met] == ["ok", "ok"]
        answers = await asyncio.gather(one.aask("recall"), two.aask("recall"))
        return [a.answer for a in answers]

    try:
        assert asyncio.run(both()) == ["first", "secon"]
    finally:
        one.close()
        two.close()
        import builtins

        builtins.__dict__.pop("_test_barrier", None)


def same_sub_call_twice() -> QuestionScript:
    """Both questions' code makes the same sub-call."""
    return QuestionScript(
        {
            first: [
                repl(f"{name} = llm_query('label the scores')\nprint({name})"),
                lambda body: f"FINAL({outputs(last_user_text(body))[0]})",
            ]
            for first, name in (("label them", "label"), ("label them again", "again"))
        },
        sub=lambda prompt: f"labelled: {prompt}",
    )


def sub_requests(server) -> int:
    return sum(1 for body in server.requests if body["messages"][0]["role"] != "system")


def test_questions_share_the_sub_call_cache_and_its_hits_count_in_the_session(chat_server, home):
    server = chat_server(same_sub_call_twice())
    lm = OpenAICompatibleLM("m", base_url=server.url, temperature=0.0)
    with RLM(lm, repl="inprocess").session(CONTEXT) as session:
        first = session.ask("label them")
        second = session.ask("label them again")
        total = session.usage.total
    assert first.answer == second.answer == "labelled: label the scores"
    assert sub_requests(server) == 1  # the second question's sub-call came from the cache
    assert (first.usage.total.cache_hits, second.usage.total.cache_hits) == (0, 1)
    assert second.usage.total.saved_tokens > 0
    assert total.cache_hits == 1 and total.saved_tokens == second.usage.total.saved_tokens
    assert total.calls == first.usage.total.calls + second.usage.total.calls
    assert (home / "cache.sqlite").is_file()  # the default cache, under DEEPRLM_HOME

    # Off, every call is made; the cache file is not written.
    other = chat_server(same_sub_call_twice())
    lm = OpenAICompatibleLM("m", base_url=other.url, temperature=0.0)
    with RLM(lm, repl="inprocess").session(CONTEXT, cache="off") as session:
        session.ask("label them")
        session.ask("label them again")
        assert session.usage.total.cache_hits == 0
    assert sub_requests(other) == 2


class Scores(pydantic.BaseModel):
    best: str
    points: int


def test_a_question_can_have_a_typed_answer(chat_server):
    script = QuestionScript(
        {
            "parse the scores": three_questions().turns["parse the scores"],
            "who scored best?": [
                repl("best = max(scores, key=scores.get)\nfound = {'best': best}"),
                # Wrong at first (a field is missing): the root is told and corrects it.
                'FINAL_VAR("found")',
                repl("found['points'] = scores[best]"),
                'FINAL_VAR("found")',
            ],
        }
    )
    server = chat_server(script)
    with RLM("openai/m", base_url=server.url, repl="inprocess").session(CONTEXT) as session:
        untyped = session.ask("parse the scores")
        typed = session.ask("who scored best?", output=Scores)
        with pytest.raises(InputError, match="not a valid JSON Schema"):
            session.ask("who scored best?", output={"type": "objekt"})
        asked = len(session.history)
    assert untyped.value is None and untyped.answer == "3 scores parsed"
    assert typed.value == Scores(best="bo", points=5)
    assert json.loads(typed.answer) == {"best": "bo", "points": 5}
    assert typed.iterations == 4
    told = script.requests["who scored best?"][2]["messages"][-1]["content"]
    assert "does not follow the required JSON Schema" in told and "points" in told
    assert asked == 2  # a bad schema is refused before the question runs
    # The schema was given with the question.
    assert '"points"' in script.first_prompt("who scored best?")


def test_a_session_trace_is_not_resumed_as_a_single_run(chat_server, tmp_path):
    server = chat_server(three_questions())
    trace = tmp_path / "session.jsonl"
    rlm = RLM("openai/m", base_url=server.url, repl="inprocess", trace_path=trace)
    with rlm.session(CONTEXT) as session:
        session.ask("parse the scores")
        session.ask("who scored best?")
        session_id = session.id
    # Its questions went through the cache, but a question alone is not the session: its
    # REPL held what earlier questions made.
    with pytest.raises(InputError, match=f"questions of session {session_id}.*--session"):
        RLM("openai/m", base_url=server.url, repl="inprocess").resume(trace, CONTEXT)
