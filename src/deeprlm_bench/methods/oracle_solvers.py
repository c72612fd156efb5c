"""The oracle's REPL code: one solver per task family, sent verbatim as the scripted root's
code block and run in the engine's REPL over `context`.

Solvers read the context only through code and the sub-model, as an RLM would: they parse
records, documents and source files themselves and ask the sub-model only for meaning
(a question's class, a fact stated in a document), which the oracle sub-model answers from
the gold. They never see the gold answer. Only the standard library is used, so the file
runs in any REPL kind. The request formats below are shared with the oracle sub-model.
"""

import collections
import datetime
import itertools
import re

LABEL_REQUEST = (
    "Classify each question below by the kind of answer it asks for, as one of: {labels}. "
    "Reply with one line per question, in the form '<number>: <label>'.\n\n{items}"
)
FIELD_REQUEST = "Document:\n{doc}\n\nFrom this document, give only the {field}."
LABELS = (
    "description and abstract concept",
    "entity",
    "human being",
    "numeric value",
    "location",
    "abbreviation",
)
RELATIONS = ("more common than", "less common than", "same frequency as")
BATCH = 200


def solve(task, context, info, llm_query, llm_batch):
    family = task.split("-")[0]
    if family == "niah":
        return solve_niah(context, info)
    if family == "aggregate":
        return solve_aggregate(context, info, llm_batch)
    if family == "pairs":
        return solve_pairs(context, info, llm_batch)
    if family == "multihop":
        return solve_multihop(context, info, llm_query)
    return solve_codeqa(context, info)


def solve_niah(context, info):
    match = re.search(
        r"special magic numbers for " + re.escape(info["key"]) + r" is: (\d+)", context
    )
    return "Answer: " + match.group(1)


# --- records (aggregate, pairs) ---------------------------------------------------------


def classify(questions, llm_batch):
    """Each distinct question's class, asked of the sub-model in batches."""
    distinct = list(dict.fromkeys(questions))
    prompts = []
    for start in range(0, len(distinct), BATCH):
        items = "\n".join(f"{i}: {q}" for i, q in enumerate(distinct[start : start + BATCH]))
        prompts.append(LABEL_REQUEST.format(labels=", ".join(LABELS), items=items))
    label_of = {}
    for start, reply in zip(range(0, len(distinct), BATCH), llm_batch(prompts), strict=True):
        for line in reply.splitlines():
            number, _, label = line.partition(": ")
            if number.strip().isdigit():
                label_of[distinct[start + int(number)]] = label.strip()
    return [label_of[q] for q in questions]


def read_records(context, labelled, llm_batch):
    """(day, user, label) for every line."""
    dates = {}
    days, users, questions, labels = [], [], [], []
    for line in context.split("\n"):
        parts = line.split(" || ")
        date = parts[0][len("Date: ") :]
        if date not in dates:
            dates[date] = datetime.datetime.strptime(date, "%b %d, %Y").date()
        days.append(dates[date])
        users.append(int(parts[1][len("User: ") :]))
        questions.append(parts[2][len("Instance: ") :])
        if labelled:
            labels.append(parts[3][len("Label: ") :])
    if not labelled:
        labels = classify(questions, llm_batch)
    return list(zip(days, users, labels, strict=True))


def parse_day(text):
    return datetime.datetime.strptime(text, "%b %d, %Y").date()


def relation(a, b):
    return RELATIONS[0] if a > b else RELATIONS[1] if a < b else RELATIONS[2]


def solve_aggregate(context, info, llm_batch):
    records = read_records(context, info["labelled"], llm_batch)
    kind = info["kind"]
    if kind.endswith("_in_range"):
        first, last = parse_day(info["first"]), parse_day(info["last"])
        records = [r for r in records if first <= r[0] <= last]
    counts = collections.Counter(label for _, _, label in records)
    if kind == "most_common":
        return "Label: " + max(LABELS, key=lambda label: counts[label])
    if kind == "least_common":
        return "Label: " + min(LABELS, key=lambda label: counts[label])
    if kind in ("count", "count_in_range"):
        return f"Answer: {counts[info['label']]}"
    if kind in ("compare", "compare_in_range"):
        a, b = info["a"], info["b"]
        return f"Answer: {a} is {relation(counts[a], counts[b])} {b}"
    per_user = collections.Counter(user for _, user, label in records if label == info["label"])
    return f"User: {per_user.most_common(1)[0][0]}"


def solve_pairs(context, info, llm_batch):
    records = read_records(context, info["labelled"], llm_batch)
    days_of = collections.defaultdict(lambda: collections.defaultdict(list))
    for day, user, label in records:
        days_of[user][label].append(day)
    users = sorted(days_of)
    kind, x, y = info["kind"], info.get("x"), info.get("y")
    if kind == "either":
        chosen = [u for u in users if days_of[u][x] or days_of[u][y]]
        pairs = itertools.combinations(chosen, 2)
    elif kind == "after":
        day = parse_day(info["day"])
        chosen = [u for u in users if any(d > day for d in days_of[u][x])]
        pairs = itertools.combinations(chosen, 2)
    elif kind == "exactly":
        chosen = [u for u in users if len(days_of[u][x]) == info["k"]]
        pairs = itertools.combinations(chosen, 2)
    elif kind == "roles":
        firsts = [u for u in users if days_of[u][x]]
        seconds = [u for u in users if days_of[u][y] and not days_of[u][x]]
        pairs = itertools.product(firsts, seconds)
    else:
        day = parse_day(info["day"])
        firsts = [u for u in users if any(d < day for d in days_of[u][x])]
        seconds = [u for u in users if any(d >= day for d in days_of[u][y])]
        pairs = ((a, b) for a in firsts for b in seconds if a != b)
    return "\n".join(f"({a}, {b})" for a, b in pairs)


# --- documents (multihop) ---------------------------------------------------------------


def solve_multihop(context, info, llm_query):
    by_title = {}
    for doc in context:
        by_title.setdefault(doc.split("\n", 1)[0], doc)

    def fact(title, field):
        return llm_query(FIELD_REQUEST.format(doc=by_title[title], field=field)).strip()

    kind = info["kind"]
    sponsor = fact(f"{info['series']} {info['year']}", "main sponsor")
    if kind == "sponsor_founded":
        return "Answer: " + fact(sponsor, "founding year")
    if kind == "sponsor_country":
        return "Answer: " + fact(fact(sponsor, "headquarters city"), "country")
    founder = fact(sponsor, "founder")  # "Name (born YEAR)", a person document's title
    if kind == "sponsor_founder":
        return "Answer: " + founder.split(" (born ")[0]
    birthplace = fact(founder, "birthplace")
    if kind == "founder_city":
        return "Answer: " + birthplace
    if kind == "founder_river":
        return "Answer: " + fact(birthplace, "river")
    return "Answer: " + fact(birthplace, "country")


# --- source files (codeqa) --------------------------------------------------------------


def module_path(module):
    return module.replace(".", "/") + ".py"


def enclosing_def(source, position):
    starts = [m for m in re.finditer(r"^def (\w+)\(", source[:position], re.M)]
    return starts[-1].group(1) if starts else None


class Program:
    """Evaluates one function of the repository by executing only the definitions it
    needs, module by module, instead of importing the whole repository."""

    NAME = re.compile(r"[A-Za-z_]\w*")

    def __init__(self, files):
        self.files = files
        self.spaces = {}

    def space(self, module):
        if module not in self.spaces:
            source = self.files[module_path(module)]
            imports = {}
            for m in re.finditer(r"^from (\S+) import (.+)$", source, re.M):
                for name in m.group(2).split(", "):
                    imports[name.strip()] = m.group(1)
            self.spaces[module] = (source, imports, {})
        return self.spaces[module]

    def get(self, module, name):
        source, imports, namespace = self.space(module)
        if name in namespace:
            return namespace[name]
        if name in imports:
            namespace[name] = self.get(imports[name], name)
            return namespace[name]
        constant = re.search(rf"^{name} = (\d+)$", source, re.M)
        if constant:
            namespace[name] = int(constant.group(1))
            return namespace[name]
        found = re.search(rf"^def {name}\(.*?(?=^\S|\Z)", source, re.M | re.S)
        if not found:
            raise NameError(f"{name} is not defined in {module}")
        code = found.group(0)
        for ident in set(self.NAME.findall(code.split(":", 1)[1])):
            if ident != name and (
                ident in imports or re.search(rf"^(?:def )?{ident}\b", source, re.M)
            ):
                self.get(module, ident)
        exec(code, namespace)
        return namespace[name]


def solve_codeqa(context, info):
    kind, question, options = info["kind"], info["question"], info["options"]
    target = re.search(r"`([^`]+)`", question).group(1)
    if kind == "value":
        call = re.fullmatch(r"(.+)\.(\w+)\((\d+)\)", target)
        found = str(Program(context).get(call.group(1), call.group(2))(int(call.group(3))))
        answers = {found}
    elif kind == "writer":
        answers = set()
        for path, source in context.items():
            for m in re.finditer(re.escape(f'config["{target}"] = '), source):
                answers.add(path[:-3].replace("/", ".") + "." + enclosing_def(source, m.start()))
    elif kind == "caller":
        module, name = target.rsplit(".", 1)
        answers = set()
        for path, source in context.items():
            here = path[:-3].replace("/", ".")
            imported = re.search(rf"^from {re.escape(module)} import .*\b{name}\b", source, re.M)
            if here != module and not imported:
                continue
            for m in re.finditer(rf"\b{name}\(", source):
                line_start = source.rfind("\n", 0, m.start()) + 1
                if source.startswith("def ", line_start):
                    continue
                caller = enclosing_def(source, m.start())
                if caller:
                    answers.add(f"{here}.{caller}")
    else:
        answers = {
            path[:-3].replace("/", ".")
            for path, source in context.items()
            if re.search(rf"^{target} = ", source, re.M)
        }
    letters = [letter for letter, option in zip("ABCD", options, strict=True) if option in answers]
    return "Answer: " + letters[0]
