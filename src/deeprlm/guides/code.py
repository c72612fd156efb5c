"""Questions about source code: what it says (`CODE`, by search, with an example for
lettered choices) and what a call returns (`RUN`)."""

from __future__ import annotations

from deeprlm.guides.kind import Kind
from deeprlm.guides.words import lettered_choices

_CODE_EXAMPLE = """Question: What is the value of TIMEOUT in the mailer service?
```repl
print(search("TIMEOUT =", context))
```
Output:
3 hits for 'TIMEOUT =' (case-insensitive)
['shop/auth/session.py', line 5]
TIMEOUT = 30
['shop/mailer/send.py', line 7]
TIMEOUT = 12
['shop/mailer/queue.py', line 3]
from shop.mailer.send import TIMEOUT
Reply:
The mailer service is the folder shop/mailer/; its send.py sets TIMEOUT.
FINAL(12)"""

# A question with lettered choices: the hits name each place as the choices do
# (`pkg.mod.func`), and the reply says which choice that is. Shown only the value example,
# the 1.5B root searched well, then reran its search to the end of its turns and guessed a
# letter (codeqa 128k: 2 of 5 right).
_CHOICE_EXAMPLE = """Question: Which function writes the config key `mail.retries`?
A) shop.auth.session.load_retries
B) shop.mailer.send.configure_mail
C) shop.mailer.queue.read_retries
D) shop.billing.tax.configure_tax
Give your final answer in the form 'Answer: <letter>'.
```repl
print(search("mail.retries", context))
```
Output:
2 hits for 'mail.retries' (case-insensitive)
['shop/mailer/send.py', line 8, in shop.mailer.send.configure_mail]
def configure_mail(config):
    config["mail.retries"] = 3
['shop/mailer/queue.py', line 14, in shop.mailer.queue.read_retries]
def read_retries(config):
    return config.get("mail.retries", 5)
Reply:
shop.mailer.send.configure_mail writes it (config["mail.retries"] = 3); read_retries only \
reads it. shop.mailer.send.configure_mail is choice B.
FINAL(Answer: B)"""


def code_example(query: str) -> str:
    """The code example in the form of `query`: with lettered choices or without."""
    return _CHOICE_EXAMPLE if lettered_choices(query) else _CODE_EXAMPLE


_RUN_EXAMPLE = """Question: What does `shop.mailer.send.retry_delay(3)` return?
A) 4
B) 9
C) 12
D) 27
Give your final answer in the form 'Answer: <letter>'.
```repl
print(run_code(context, "shop.mailer.send.retry_delay(3)"))
```
Output:
12
Reply:
12 is option C.
FINAL(Answer: C)"""


CODE = Kind(
    "code",
    "a question about source code, e.g. 'Which function calls X?', 'Which module "
    "defines Y?', 'What is the value of Z in the billing service?'",
    ("search", "llm_query"),
    "1. Search for the name the question asks about and print the hits; each says "
    "its file.\n2. Keep the hits in the folder or file the question is about.\n3. "
    "Reply FINAL(answer) in the question's form.",
    _CODE_EXAMPLE,
    example_for=lambda shape, query: code_example(query),
)


RUN = Kind(
    "run",
    "what a function of the source code returns for given arguments",
    ("run_code", "search"),
    "1. Run the call the question names with run_code and print its value.\n2. Reply "
    "FINAL(answer) in the question's form.",
    _RUN_EXAMPLE,
)
