"""How a small root model is taught: one kind of question, one worked example.

A 1.5B model copies a worked example far better than it follows rules, and mixes two
examples into one wrong program (a second example once cost it needles it had found). So
the engine first picks the kind of question it faces (`pick_kind`), and the root then sees
the functions, steps and example of that kind only. Each kind's example is set in a world
unlike any benchmark's (orders, reviews, lighthouses, a mail service), so the model learns
the pattern, not an answer.

The pick reads the context's structure, not the model: a dict of source files is code; a
text of records is a count over a field the records state, a count over a class that must
be judged from their text, or a list of pairs (ordered pairs, where each of the two has a
role, apart); a question naming a call in source code is answered by running it; a question
that describes what it asks through another thing ("the founder of the sponsor of ...")
follows a chain of look-ups, one search a turn; anything else is a look-up. Asking the 1.5B
model itself, in a call held to the kinds' names, picked the expected kind for 5 of 7 task
families on three tuning seeds (and fewer with longer descriptions), which is why the
structure decides.

Within a kind, the example takes the question's form where the root would otherwise copy
the wrong one: a count's form of answer (`COUNT_FORMS`), a pairs condition
(`PAIR_CONDITIONS`), lettered choices for a code question.

`KINDS` is the one table: each kind's functions, steps and example come from it.
"""

from deeprlm.guides.code import code_example
from deeprlm.guides.counts import COUNT_FORMS, count_example, judge_example, needs_step
from deeprlm.guides.fields import text_field
from deeprlm.guides.kind import FOLLOW_UP, FUNCTIONS, Kind, taught
from deeprlm.guides.kinds import (
    DEFAULT_KIND,
    KINDS,
    answer_variable_of,
    example_of,
    first_step_of,
    follow_up_of,
    functions_of,
    steps_of,
)
from deeprlm.guides.labelling import label_rows_step
from deeprlm.guides.pairs import PAIR_CONDITIONS, pair_condition, pairs_example
from deeprlm.guides.pick import Pick, pick_kind
from deeprlm.guides.words import (
    as_choice_letter,
    choices_named,
    lettered_choices,
    question_labels,
    without_quoted,
)

__all__ = [
    "COUNT_FORMS",
    "DEFAULT_KIND",
    "FOLLOW_UP",
    "FUNCTIONS",
    "KINDS",
    "PAIR_CONDITIONS",
    "Kind",
    "Pick",
    "answer_variable_of",
    "as_choice_letter",
    "choices_named",
    "code_example",
    "count_example",
    "example_of",
    "first_step_of",
    "follow_up_of",
    "functions_of",
    "judge_example",
    "label_rows_step",
    "lettered_choices",
    "needs_step",
    "pair_condition",
    "pairs_example",
    "pick_kind",
    "question_labels",
    "steps_of",
    "taught",
    "text_field",
    "without_quoted",
]
