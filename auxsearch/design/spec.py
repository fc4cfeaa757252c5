"""The parts an aux family is declared with: options, their rules and when they apply.

Torch-free data types. :mod:`auxsearch.design.families` declares the families, the wiring
options every family takes and the task table with them; design validation
(``graph.normalize``), the search space (``space.py``), the grid, the aux registry
(``aux/__init__.py``) and the generated reference (``docgen.py``) all read those
declarations, so a new family or option is written down once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auxsearch.errors import ConfigError

if TYPE_CHECKING:
    from auxsearch.design.tasks import TaskSpec


@dataclass(frozen=True)
class Rule:
    """A check on one value and the rule in words: errors read ``"{words}, got {value!r}"``."""

    check: Callable[[Any], bool]
    words: str
    choices: tuple = ()  # the values a str option may take
    search_words: str = ""  # the same rule as a search-space error words it (default: ``words``)

    def test(self, key: str, v: Any, *, search: bool = False) -> None:
        if not self.check(v):
            raise ConfigError(key, f"{(self.search_words or self.words) if search else self.words}, got {v!r}")


def at_least(low: float, note: str = "") -> Rule:
    return Rule(lambda v: v >= low, f"must be >= {low}" + (f" ({note})" if note else ""))


def within(low: float, high: float) -> Rule:
    return Rule(lambda v: low <= v <= high, f"must be in [{low}, {high}]")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"must be one of {', '.join(choices)}", choices)


# An EMA momentum m: p <- m * p + (1 - m) * source; m = 1 would never follow the source.
EMA_RULE = Rule(lambda v: 0 < v < 1, "must satisfy 0 < m < 1", search_words="must be < 1 and > 0")
ANY_BOOL = Rule(lambda v: True, "must be true or false")


@dataclass(frozen=True)
class When:
    """A condition for an option to change the network: errors read "only applies with {words}{detail}".

    ``test(entry, task)`` sees the aux entry with every option's value (defaults filled);
    ``detail`` may name them as format fields (``", but head is {head!r}"``); the reference
    shows ``words`` alone.
    """

    test: Callable[[Mapping[str, Any], TaskSpec], bool]
    words: str
    detail: str = ""

    def why(self, entry: Mapping[str, Any]) -> str:
        return self.words + self.detail.format(**entry)


@dataclass(frozen=True)
class Option:
    """One key of an aux entry: its value, its search dimension and when it applies."""

    name: str
    kind: type  # int, float, bool or str
    default: Any
    rule: Rule
    help: str  # one line: the reference and the search-space table show it
    search: Any = None  # the search dimension's default (value, list, {low, high}); None: never searched
    applies: tuple[When, ...] = ()  # all must hold, else the option is refused when written, dropped when not
    asked: tuple[When, ...] = ()  # further conditions for the search to ask it (else its default stands)
    hashed_default: bool = True  # False: its default stays out of the design hash (older designs keep theirs)
    leading: bool = False  # the search asks it before the family's own options (they depend on it)
    picks_family: bool = False  # its values name the family whose head it uses
    memory_neutral: bool = False  # its value cannot change peak training memory (an EMA momentum: an in-place
    #                               lerp by a scalar): designs that differ only here share one memory oracle call

    def value(self, key: str, v: Any) -> Any:
        """``v`` type-checked and ruled (an int where a float is expected is accepted)."""
        is_int = isinstance(v, int) and not isinstance(v, bool)
        if self.kind is float and is_int:
            v = float(v)
        if self.kind is int and not is_int:
            raise ConfigError(key, f"must be an integer, got {v!r}")
        if not isinstance(v, self.kind):
            raise ConfigError(key, f"must be of type {self.kind.__name__}, got {v!r}")
        self.rule.test(key, v)
        return v

    def blocked(self, entry: Mapping[str, Any], task: TaskSpec) -> When | None:
        """The first condition of :attr:`applies` that fails for ``entry`` (None: it applies)."""
        return next((w for w in self.applies if not w.test(entry, task)), None)

    def is_asked(self, entry: Mapping[str, Any], task: TaskSpec) -> bool:
        """Whether a search asks this option for ``entry``: searchable, applies, and asked."""
        return (self.search is not None and self.blocked(entry, task) is None
                and all(w.test(entry, task) for w in self.asked))

    def dimension(self) -> tuple:
        """What a search dimension of this name is checked against (two families may share it)."""
        return (self.kind, repr(self.search), self.rule.words, self.help)


def load(ref: str | Callable) -> Callable:
    """A callable, or ``"package.module:function"`` imported on first use."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class FamilySpec:
    """An aux family: its options and what the rest of the package needs to know of it.

    ``builder(ctx, opts) -> AuxNet`` builds it (``auxsearch.aux.base``); ``classifier(ctx,
    opts, shape)`` its own classification head alone, for families another family's
    ``head`` option may pick. Both may be given as ``"module:function"`` strings, so
    declaring a family imports no torch.
    """

    name: str  # the YAML ``family`` name
    help: str  # one line for the reference
    builder: str | Callable
    options: tuple[Option, ...] = ()  # besides the common ones (an option named depth/width overrides it)
    global_end: bool = False  # may end with the network's real head (its layers end where a later unit starts)
    classification_only: bool = False  # its loss is a classifier's: refused on dense tasks
    ema: str | None = None  # the option holding the momentum of the EMA copy of a unit it holds (None: no copy)
    classifier: str | Callable | None = None

    def build(self, ctx: Any, opts: dict) -> Any:
        return load(self.builder)(ctx, opts)

    def head(self, ctx: Any, opts: dict, shape: tuple) -> Any:
        if self.classifier is None:
            raise ConfigError("aux.head", f"family {self.name!r} has no classifier of its own to serve as a head")
        return load(self.classifier)(ctx, opts, shape)
