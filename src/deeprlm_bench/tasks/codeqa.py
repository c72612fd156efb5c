"""`codeqa` (LongBench-v2 CodeQA style): a generated Python repository, given as a dict of
path -> source, and a four-option question about it.

The repository is real, importable Python: modules with constants, integer functions that
call each other across modules (an acyclic call graph, at most three calls deep), functions
that write and read config keys, and plain classes for bulk. Question kinds: what a function
returns for an argument, which function writes a config key, which function calls a given
one, which module defines a constant. Scored on the option letter extracted from the answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from deeprlm.context import as_text
from deeprlm_bench import scoring
from deeprlm_bench.banks import words
from deeprlm_bench.example import Example, too_short
from deeprlm_bench.tokens import chars_for

MIN_TOKENS = 2048
LETTERS = "ABCD"
KINDS = ("value", "writer", "caller", "constant")

_AREAS = (
    "billing", "storage", "reports", "network", "search", "auth", "scheduler", "inventory",
    "shipping", "pricing", "metrics", "accounts", "catalog", "payments", "alerts", "exports",
)  # fmt: skip
_TOPICS = (
    "rates", "ledger", "cache", "queue", "quota", "tiers", "limits", "windows", "batches",
    "buckets", "tokens", "rules", "units", "routes", "slots", "grades", "zones", "terms",
    "shards", "stages", "checks", "levels", "pools", "weights",
)  # fmt: skip
_VERBS = (
    "compute", "adjust", "scale", "resolve", "normalize", "estimate", "merge", "apply",
    "reduce", "derive", "score", "rank", "clamp", "shift", "project", "blend", "round",
    "settle", "weigh", "measure",
)  # fmt: skip
_NOUNS = (
    "fee", "total", "weight", "offset", "budget", "margin", "quota", "index", "delay",
    "priority", "balance", "ratio", "limit", "span", "count", "charge", "bonus", "penalty",
    "credit", "step", "score", "level", "depth", "rate", "share",
)  # fmt: skip
_CONST_WORDS = (
    "BASE", "MAX", "MIN", "DEFAULT", "EXTRA", "GRACE", "SPARE", "UNIT", "STEP", "CAP",
    "FLOOR", "SEED", "TIER", "BATCH", "WINDOW", "RETRY",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Func:
    """A value function: its form, constants and callees, which is enough to evaluate it
    without running the generated source."""

    module: str
    name: str
    form: str
    a: int
    b: int
    m: int
    callees: tuple[Func, ...] = ()
    depth: int = 0

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __call__(self, x: int) -> int:
        a, b, m, c = self.a, self.b, self.m, self.callees
        if self.form == "linear":
            return x * a + b
        if self.form == "loop":
            return sum(x + i for i in range(a)) % m
        if self.form == "chain":
            return c[0](x + a) * b % m
        if self.form == "branch":
            return c[0](x // 2) + a if x % 2 == 0 else c[1](x + 1) - b
        return c[0](x) + c[1](x + a)  # "sum"


@dataclass
class Module:
    """A module while it is being built (mutable until the repository is rendered)."""

    path: str
    name: str  # dotted
    docstring: str
    imports: dict[str, str] = field(default_factory=dict)  # imported name -> module
    constants: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    reads: list[tuple[str, str]] = field(default_factory=list)  # (config key, reader)

    def source(self) -> str:
        by_module: dict[str, list[str]] = {}
        for name, module in self.imports.items():
            by_module.setdefault(module, []).append(name)
        sections = [f'"""{self.docstring}"""']
        if by_module:
            sections.append(
                "\n".join(
                    f"from {module} import {', '.join(sorted(names))}"
                    for module, names in sorted(by_module.items())
                )
            )
        if self.constants:
            sections.append("\n".join(self.constants))
        if self.blocks:
            sections.append("\n\n\n".join(self.blocks))
        return "\n\n".join(sections) + "\n"


def _unique(base: str, taken: dict[str, int], sep: str = "_") -> str:
    """`base` the first time, then `base_2`, `base_3`, ...: names that never repeat,
    however large the repository grows."""
    n = taken.get(base, 0) + 1
    taken[base] = n
    return base if n == 1 else f"{base}{sep}{n}"


class _Repo:
    """Builds the repository module by module, block by block, and keeps the tables the
    questions are drawn from: functions and their callers, config writers and readers,
    constants. `build_repo` renders each module once, when it is complete."""

    def __init__(self, rng: random.Random, package: str) -> None:
        self.rng = rng
        self.package = package
        self.modules: list[Module] = []
        self.funcs: list[Func] = []
        self.writers: dict[str, str] = {}  # config key -> qualified writer
        self.readers: dict[str, list[str]] = {}  # config key -> qualified readers
        self.recent_keys: list[str] = []
        self.constants: dict[str, str] = {}  # constant -> defining module
        self.callers: dict[str, list[str]] = {}  # qualified func -> qualified callers
        self.taken: dict[str, int] = {}

    def new_module(self) -> Module:
        rng = self.rng
        area, topic = rng.choice(_AREAS), rng.choice(_TOPICS)
        path = _unique(f"{self.package}/{area}/{topic}", self.taken) + ".py"
        module = Module(
            path=path,
            name=path[:-3].replace("/", "."),
            docstring=f"{topic.capitalize()} helpers for the {area} service.",
        )
        for _ in range(rng.randrange(2, 4)):
            self._constant(module)
        self.modules.append(module)
        return module

    def _constant(self, module: Module) -> str:
        rng = self.rng
        name = _unique(f"{rng.choice(_CONST_WORDS)}_{rng.choice(_NOUNS).upper()}", self.taken)
        self.constants[name] = module.name
        module.names.add(name)
        module.constants.append(f"{name} = {rng.randrange(2, 20)}")
        return name

    def _local_name(self, module: Module, name: str) -> str:
        while name in module.names:
            name = f"{name}_{self.rng.randrange(2, 10)}"
        module.names.add(name)
        return name

    def _pick_callee(self, module: Module) -> Func | None:
        """An earlier value function at most two calls deep, importable under its own name."""
        rng = self.rng
        for _ in range(8):
            if not self.funcs:
                return None
            # Favour recent functions so call chains cross nearby modules, not only the
            # first few.
            pool = self.funcs[-200:]
            callee = pool[rng.randrange(len(pool))]
            if callee.depth > 2:
                continue
            if callee.module == module.name:
                return callee
            bound = module.imports.get(callee.name)
            if bound == callee.module or (bound is None and callee.name not in module.names):
                module.imports[callee.name] = callee.module
                module.names.add(callee.name)
                return callee
        return None

    def value_function(self, module: Module) -> None:
        rng = self.rng
        name = self._local_name(module, f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}")
        forms = ["linear", "loop", "chain", "branch", "sum"]
        form = rng.choice(forms) if len(self.funcs) > 3 else rng.choice(forms[:2])
        callees: list[Func] = []
        for _ in range({"chain": 1, "branch": 2, "sum": 2}.get(form, 0)):
            callee = self._pick_callee(module)
            if callee is None:
                form, callees = "linear", []
                break
            callees.append(callee)
        a, b, m = rng.randrange(1, 10), rng.randrange(1, 10), rng.randrange(50, 200)
        # Half the time a literal becomes one of the module's constants, so the reader has
        # to look it up.
        a_text = str(a)
        if module.constants and rng.random() < 0.5:
            line = rng.choice(module.constants)
            const_name, const_value = line.split(" = ")
            a, a_text = int(const_value), const_name
        c = [callee.name for callee in callees]
        if form == "linear":
            body = f"    return x * {a_text} + {b}"
        elif form == "loop":
            body = (
                f"    total = 0\n    for i in range({a_text}):\n        total += x + i\n"
                f"    return total % {m}"
            )
        elif form == "chain":
            body = f"    y = x + {a_text}\n    return {c[0]}(y) * {b} % {m}"
        elif form == "branch":
            body = (
                f"    if x % 2 == 0:\n        return {c[0]}(x // 2) + {a_text}\n"
                f"    return {c[1]}(x + 1) - {b}"
            )
        else:
            body = f"    return {c[0]}(x) + {c[1]}(x + {a_text})"
        doc = f"{name.split('_')[0].capitalize()}s the {name.split('_', 1)[1]} for x units."
        module.blocks.append(f'def {name}(x):\n    """{doc}"""\n{body}')
        depth = 1 + max((callee.depth for callee in callees), default=0)
        func = Func(module.name, name, form, a, b, m, tuple(callees), depth)
        self.funcs.append(func)
        for callee in dict.fromkeys(callees):
            self.callers.setdefault(callee.qualname, []).append(func.qualname)

    def config_writer(self, module: Module) -> None:
        rng = self.rng
        area = module.name.split(".")[1]
        name = self._local_name(module, f"configure_{rng.choice(_NOUNS)}")
        lines = []
        for _ in range(rng.randrange(1, 3)):
            key = _unique(f"{area}.{rng.choice(_NOUNS)}_{rng.choice(_TOPICS)}", self.taken)
            self.writers[key] = f"{module.name}.{name}"
            self.recent_keys.append(key)
            del self.recent_keys[:-50]
            lines.append(f'    config["{key}"] = {rng.randrange(1, 500)}')
        module.blocks.append(
            f'def {name}(config):\n    """Sets the defaults this service needs."""\n'
            + "\n".join(lines)
        )

    def config_reader(self, module: Module) -> None:
        rng = self.rng
        if not self.writers:
            return self.filler_class(module)
        # A key written recently, so readers sit near their writers (and the pick costs
        # the same however many keys there are).
        keys = self.recent_keys
        key = keys[rng.randrange(max(0, len(keys) - 50), len(keys))]
        name = self._local_name(module, f"read_{key.split('.', 1)[1]}")
        module.blocks.append(
            f'def {name}(config):\n    """Reads the setting, with a fallback."""\n'
            f'    return config.get("{key}", {rng.randrange(1, 100)})'
        )
        self.readers.setdefault(key, []).append(f"{module.name}.{name}")
        module.reads.append((key, f"{module.name}.{name}"))
        return None

    def filler_class(self, module: Module) -> None:
        rng = self.rng
        noun = rng.choice(_NOUNS)
        name = self._local_name(module, f"{noun.capitalize()}{rng.choice(_TOPICS).capitalize()}")
        field_name = rng.choice(_NOUNS)
        module.blocks.append(
            f"class {name}:\n"
            f'    """A {noun} entry as the {module.name.split(".")[1]} service stores it."""\n\n'
            f"    def __init__(self, name, {field_name}):\n"
            f"        self.name = name\n        self.{field_name} = {field_name}\n\n"
            f"    def describe(self):\n"
            f'        return f"{{self.name}}: {{self.{field_name}}}"'
        )

    def add_block(self, module: Module) -> None:
        pick = self.rng.random()
        if pick < 0.55:
            self.value_function(module)
        elif pick < 0.7:
            self.config_writer(module)
        elif pick < 0.8:
            self.config_reader(module)
        else:
            self.filler_class(module)


def build_repo(rng: random.Random, target_chars: int) -> tuple[dict[str, str], _Repo]:
    package = words.invented_word(rng, 2).lower()
    repo = _Repo(rng, package)
    done: dict[str, str] = {}  # rendered modules, kept out of the running size
    done_chars = 0
    while True:
        module = repo.new_module()
        for _ in range(rng.randrange(6, 14)):
            repo.add_block(module)
        text = as_text({module.path: module.source()})
        sep = 2 if done else 0
        if done_chars + sep + len(text) > target_chars:
            _trim_to_fit(repo, module, target_chars - done_chars - sep)
            text = as_text({module.path: module.source()})
            done[module.path] = module.source()
            return done, repo
        done[module.path] = module.source()
        done_chars += sep + len(text)


def _trim_to_fit(repo: _Repo, module: Module, room: int) -> None:
    """Drops the last module's trailing blocks until it fits, then pads it with comment
    lines to the exact room. Only blocks nothing else depends on are dropped: this module
    is the newest, so nothing calls into it from outside."""
    dropped = False
    while module.blocks and len(as_text({module.path: module.source()})) > room:
        module.blocks.pop()
        dropped = True
    if dropped:
        _forget_dropped(repo, module)
    gap = room - len(as_text({module.path: module.source()}))
    joint = 3 if module.blocks else 2  # blocks are joined by two blank lines
    if gap > joint + 1:
        pad = "# " + "-" * 70 + "\n"
        module.blocks.append((pad * (gap // len(pad) + 1))[: gap - joint - 1] + "#")


def _forget_dropped(repo: _Repo, module: Module) -> None:
    """Keeps the answer tables in step with the module's remaining blocks. The module is
    the newest one, so its functions and config keys are the last ones recorded."""
    present = "\n".join(module.blocks)
    while repo.funcs and repo.funcs[-1].module == module.name:
        func = repo.funcs[-1]
        if f"def {func.name}(" in present:
            break
        repo.funcs.pop()
        repo.callers.pop(func.qualname, None)
        for callee in func.callees:
            callers = repo.callers.get(callee.qualname, [])
            if func.qualname in callers:
                callers.remove(func.qualname)
    prefix = module.name + "."
    for key in reversed(list(repo.writers)):
        if not repo.writers[key].startswith(prefix):
            break
        if f'config["{key}"]' not in present:
            del repo.writers[key]
    for key, reader in module.reads:
        if f"def {reader[len(prefix) :]}(" not in present:
            repo.readers[key].remove(reader)


def _options(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], str]:
    """Four options with the right one at a random letter."""
    options = [*rng.sample(wrong, 3), right]
    rng.shuffle(options)
    return options, LETTERS[options.index(right)]


def _value_question(repo: _Repo, rng: random.Random) -> tuple[str, str, list[str]] | None:
    deep = [f for f in repo.funcs if f.depth >= 2] or repo.funcs
    if not deep:
        return None
    func = rng.choice(deep[-500:])
    x = rng.randrange(1, 10)
    gold = func(x)
    wrong: set[int] = set()
    for callee in func.callees:
        wrong.add(callee(x))
    while len(wrong - {gold}) < 3:
        wrong.add(gold + rng.choice((-1, 1)) * rng.randrange(1, 12))
    wrong.discard(gold)
    question = f"What does `{func.qualname}({x})` return?"
    return question, str(gold), [str(w) for w in sorted(wrong)]


def _writer_question(repo: _Repo, rng: random.Random) -> tuple[str, str, list[str]] | None:
    keys = [k for k in repo.writers if repo.readers.get(k)]
    if not keys:
        return None
    key = rng.choice(keys)
    writer = repo.writers[key]
    wrong = set(repo.readers[key])
    others = [w for w in repo.writers.values() if w != writer]
    while len(wrong) < 3 and others:
        wrong.add(rng.choice(others))
    if len(wrong) < 3:
        return None
    return f"Which function writes the config key `{key}`?", writer, sorted(wrong)


def _caller_question(repo: _Repo, rng: random.Random) -> tuple[str, str, list[str]] | None:
    called = [name for name, callers in repo.callers.items() if callers]
    if not called:
        return None
    target = rng.choice(called)
    right = rng.choice(repo.callers[target])
    not_callers = [
        f.qualname for f in repo.funcs
        if f.qualname not in repo.callers[target] and f.qualname != target
    ]  # fmt: skip
    # Prefer near misses: what the target itself calls, and other callers' callees.
    target_func = next(f for f in repo.funcs if f.qualname == target)
    near = [c.qualname for c in target_func.callees if c.qualname in not_callers]
    wrong = list(dict.fromkeys(near))[:2]
    pool = [n for n in not_callers if n not in wrong]
    if len(pool) < 3 - len(wrong):
        return None
    wrong += rng.sample(pool, 3 - len(wrong))
    return f"Which function calls `{target}` directly?", right, wrong


def _constant_question(repo: _Repo, rng: random.Random) -> tuple[str, str, list[str]] | None:
    names = list(repo.constants)
    modules = sorted({m.name for m in repo.modules})
    if len(modules) < 4:
        return None
    name = rng.choice(names)
    right = repo.constants[name]
    wrong = rng.sample([m for m in modules if m != right], 3)
    return f"Which module defines the constant `{name}`?", right, wrong


_ASK = {
    "value": _value_question,
    "writer": _writer_question,
    "caller": _caller_question,
    "constant": _constant_question,
}


@dataclass(frozen=True)
class CodeQA:
    name: str = "codeqa"
    description: str = "LongBench-v2-CodeQA-style multiple choice over a generated repository"

    def generate(self, seed: int, length: int) -> Example:
        if length < MIN_TOKENS:
            raise too_short(self.name, MIN_TOKENS)
        rng = random.Random(seed)
        files, repo = build_repo(rng, chars_for(length))
        drawn = KINDS[rng.randrange(len(KINDS))]
        start = KINDS.index(drawn)
        for kind in KINDS[start:] + KINDS[:start]:
            asked = _ASK[kind](repo, rng)
            if asked is not None:
                break
        else:
            raise too_short(self.name, MIN_TOKENS * 2)
        question, right, wrong = asked
        options, letter = _options(rng, right, wrong)
        listing = "\n".join(f"{LETTERS[i]}) {option}" for i, option in enumerate(options))
        return Example(
            task=self.name,
            length=length,
            seed=seed,
            context=files,
            query=(
                "The context is a Python repository, given as a mapping from file path to "
                f"source. {question}\n{listing}\n"
                "Give your final answer in the form 'Answer: <letter>'."
            ),
            gold=letter,
            info={"kind": kind, "question": question, "options": options},
        )

    def score(self, example: Example, answer: str) -> float:
        return scoring.letter_accuracy(example.gold, answer)
