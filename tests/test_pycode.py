"""`run_code`: a codebase held as a dict of files, run from memory, leaving nothing loaded."""

from __future__ import annotations

import sys

import pytest

from deeprlm import RLM, ScriptedLM

from conftest import repl

SHOP = {
    "shop/mailer/send.py": (
        "from shop.mailer.limits import BASE\n"
        "from shop.util import double\n\n"
        "TIMEOUT = 12\n\n"
        "def retry_delay(x):\n"
        "    return double(x) + BASE\n"
    ),
    "shop/mailer/limits.py": "BASE = 3\n",
    "shop/util/__init__.py": "def double(x):\n    return 2 * x\n",
    "README.md": "not python",
}


def test_a_call_across_modules_and_packages_is_run_from_memory():
    from deeprlm.primitives.pycode import run_code

    assert run_code(SHOP, "shop.mailer.send.retry_delay(3)") == 9
    assert run_code(SHOP, "shop.mailer.send.TIMEOUT * 2") == 24
    assert not [name for name in sys.modules if name == "shop" or name.startswith("shop.")]


def test_a_module_of_the_same_name_already_loaded_is_put_back():
    from deeprlm.primitives.pycode import run_code

    assert run_code({"json.py": "VALUE = 'mine'\n"}, "json.VALUE") == "mine"
    import json

    assert json.dumps([1]) == "[1]"  # the real one, back in place


@pytest.mark.parametrize(
    ("files", "expression", "error", "message"),
    [
        ("not a dict", "x", TypeError, "takes a dict"),
        ({"a.txt": "x"}, "a.f()", ValueError, "no .py files"),
        (SHOP, "shop.mailer.send.nothing(1)", AttributeError, "nothing"),
        (SHOP, "1 +", SyntaxError, None),
    ],
)
def test_bad_calls_raise_what_python_would(files, expression, error, message):
    from deeprlm.primitives.pycode import run_code

    with pytest.raises(error, match=message):
        run_code(files, expression)
    assert "shop" not in sys.modules


@pytest.mark.parametrize("kind", ["inprocess", "sandbox"])
def test_run_code_in_the_repl_reads_the_context_when_given_only_the_call(kind):
    code = "print(run_code('shop.mailer.send.retry_delay(5)'), run_code(context, '1 + 1'))"
    root = ScriptedLM([repl(code), "FINAL(done)"])
    RLM(root, repl=kind).run("q", SHOP)
    assert "13 2" in root.calls[1][-1]["content"]
