"""EventBridge event patterns: compile once, match many events fast.

A pattern is the JSON object EventBridge accepts; this module gives it the same meaning so a
rule written for AWS behaves the same in Sluice:

- keys are ANDed; a key's value is a **list** of alternatives (ORed) for a leaf, or an
  **object** for a nested field; ``"$or": [{...}, {...}]`` ORs whole sub-patterns at any level;
- alternatives are exact values (strings, numbers compared numerically, booleans, null, "")
  or one-key operator objects: ``prefix``, ``suffix`` (both also with
  ``{"equals-ignore-case": ...}``), ``equals-ignore-case``, ``anything-but`` (a value, a list of
  strings or of numbers, or ``{"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ...}``),
  ``numeric`` (``["=", 5]``, ``[">", 0, "<=", 5]``), ``exists``, ``wildcard`` and ``cidr``
  (IPv4 and IPv6);
- a dotted key is the same field as the nested objects it spells, in patterns and in events:
  ``{"detail.state": [..]}`` is ``{"detail": {"state": [..]}}``, and either matches an event
  holding ``{"detail": {"state": ..}}`` or ``{"detail.state": ..}``; a field given twice (once
  dotted, once nested) is refused, as is one that is both a list of values and an object;
- an event array matches when any of its elements does, arrays nested in arrays included; the
  matching is array-consistent: fields matched inside an array of objects must come from one
  element, also when they are written in different places (a ``$or`` branch and its siblings);
- a missing field matches only ``{"exists": false}``. ``anything-but`` matches a present
  ``null`` (as AWS does) but never a missing field. ``exists`` looks at leaf values only: an
  object, or an empty array, counts as "no leaf value here"; a present ``null`` is a value.
  Inside an array of objects, absence is judged on the element the other fields matched, or
  on every element when nothing else pins one (docs/events.md says how this departs from AWS).
- an exact string never equals a number (``"300"`` vs ``300``), and ``true`` never equals ``1``.

Validation is EventBridge's: besides the shapes above, ``$or`` needs two or more branches,
``anything-but`` refuses an empty ``prefix``/``suffix``, and wildcards over the complexity limit
are refused as "Rule is too complex" (workflows/wildcards.py).

Patterns are compiled into closures with the per-leaf work decided up front (a set lookup for
plain strings), so matching costs about a microsecond per rule; a bus can further skip rules by
``Pattern.exact_strings`` (e.g. index rules by ``source``). An event with dotted keys is
expanded once by :func:`prepare_event`; :meth:`Pattern.matches_prepared` then skips that step,
which is what a bus matching one event against many rules calls.

Example::

    >>> p = compile_pattern({"source": ["sluice.run"], "detail": {"status": [{"prefix": "SUCC"}]}})
    >>> p.matches({"source": "sluice.run", "detail": {"status": "SUCCEEDED"}})
    True
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from workflows.dotted import expand_dotted, merge_into, prepare_event
from workflows.errors import PatternError
from workflows.wildcards import MAX_COMPLEXITY, complexity, wildcard_regex

__all__ = ["Pattern", "compile_pattern", "expand_dotted", "match_all", "prepare_event"]

Pred = Callable[[Any], bool]
ObjectMatcher = Callable[[Mapping[str, Any]], bool]

_MISSING: Any = object()
_EMPTY: Mapping[str, Any] = {}
_OPERATORS = (
    "prefix",
    "suffix",
    "equals-ignore-case",
    "anything-but",
    "numeric",
    "exists",
    "wildcard",
    "cidr",
)
_ANYTHING_BUT_OPERATORS = ("prefix", "suffix", "equals-ignore-case", "wildcard")
_NUMERIC_HINT = 'numeric expects pairs like [">", 0, "<=", 5] or ["=", 3]'
#: most alternatives one ``$or`` level may expand to when its branches share fields with siblings
MAX_OR_ALTERNATIVES = 1_000


class Pattern:
    """A compiled event pattern.

    ``source`` is the pattern as given; ``fields`` the top-level event keys it tests (from
    every ``$or`` branch too); ``exact_strings`` maps a top-level key to the only strings it can
    equal, when the pattern requires that outside any ``$or`` (a bus's pre-filter index).
    """

    __slots__ = ("_match", "exact_strings", "fields", "source")

    def __init__(
        self,
        source: dict[str, Any],
        match: ObjectMatcher,
        fields: frozenset[str],
        exact_strings: dict[str, frozenset[str]],
    ) -> None:
        self.source = source
        self._match = match
        self.fields = fields
        self.exact_strings = exact_strings

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (a decoded JSON object) satisfies the pattern."""
        return isinstance(event, dict) and self._match(prepare_event(event))

    def matches_prepared(self, event: Mapping[str, Any]) -> bool:
        """:meth:`matches` for an event already passed through :func:`prepare_event`."""
        return isinstance(event, dict) and self._match(event)

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


def compile_pattern(pattern: dict[str, Any]) -> Pattern:
    """Validate ``pattern`` as EventBridge would and compile it.

    Raises ``PatternError`` whose message starts with the offending key path, e.g.
    ``detail.size: numeric expects pairs like [">", 0, "<=", 5] ...``.
    """
    if not isinstance(pattern, dict) or not pattern:
        raise PatternError(f"pattern must be a non-empty JSON object, got {pattern!r}")
    expanded = expand_dotted(pattern)
    match = _compile_object(expanded, "")
    _check_complexity(expanded)
    fields = frozenset(_top_fields(expanded))
    exact = {
        key: frozenset(value)
        for key, value in expanded.items()
        if key != "$or" and isinstance(value, list) and all(type(v) is str for v in value)
    }
    return Pattern(pattern, match, fields, exact)


def match_all(patterns: Iterable[Pattern], event: Mapping[str, Any]) -> list[Pattern]:
    """The patterns, in order, that ``event`` matches."""
    prepared = prepare_event(event)
    return [p for p in patterns if p.matches_prepared(prepared)]


def _top_fields(pattern: Mapping[str, Any]) -> Iterator[str]:
    for key, value in pattern.items():
        if key == "$or":
            for branch in value:
                if isinstance(branch, dict):
                    yield from _top_fields(branch)
        else:
            yield key


# --- objects: keys ANDed, $or branches ORed ------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compile_object(obj: Mapping[str, Any], path: str) -> ObjectMatcher:
    checks: list[ObjectMatcher] = []
    for key, value in obj.items():
        where = _join(path, key)
        if key == "$or":
            checks.append(_compile_or(value, where))
        elif isinstance(value, dict):
            if not value:
                raise PatternError(f"{where}: a nested pattern must not be empty")
            sub = _compile_object(value, where)
            checks.append(_nested(key, sub, _only_absence(value)))
        elif isinstance(value, list):
            checks.append(_field(key, _compile_leaf(value, where)))
        else:
            raise PatternError(
                f"{where}: a pattern value must be a list of alternatives or an object, "
                f"got {value!r} (write [{_json(value)}])"
            )
    if "$or" in obj and _or_shares_fields(obj):
        # Array consistency across a $or and its siblings: match each whole alternative.
        return _any_of([_compile_object(alt, path) for alt in _alternatives(obj, path)])
    return _all_of(checks)


def _all_of(checks: list[ObjectMatcher]) -> ObjectMatcher:
    # Unrolled for the common sizes: a generator per call costs more than the checks themselves.
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda d: first(d) and second(d)
    first, rest = checks[0], _all_of(checks[1:])
    return lambda d: first(d) and rest(d)


def _any_of(branches: list[ObjectMatcher]) -> ObjectMatcher:
    frozen = tuple(branches)
    return lambda d: any(branch(d) for branch in frozen)


def _compile_or(value: Any, where: str) -> ObjectMatcher:
    if not isinstance(value, list) or not value:
        raise PatternError(f"{where}: $or expects a non-empty list of patterns")
    branches: list[ObjectMatcher] = []
    for i, branch in enumerate(value):
        if not isinstance(branch, dict) or not branch:
            raise PatternError(f"{where}[{i}]: each $or branch must be a non-empty object")
        branches.append(_compile_object(branch, f"{where}[{i}]"))
    if len(branches) < 2:
        raise PatternError(f"{where}: $or needs at least two branches, as in EventBridge (drop the $or)")
    return _any_of(branches)


def _or_shares_fields(obj: Mapping[str, Any]) -> bool:
    """Whether a $or branch names a field its siblings name too (then it is distributed)."""
    siblings = obj.keys() - {"$or"}
    return any(siblings & (branch.keys() - {"$or"}) for branch in obj["$or"])


def _alternatives(obj: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """``obj`` with its $or distributed over its siblings: one merged object per branch."""
    siblings = {k: v for k, v in obj.items() if k != "$or"}
    out: list[dict[str, Any]] = []
    for i, branch in enumerate(obj["$or"]):
        merged = expand_dotted(siblings, where)
        for key, value in branch.items():
            merge_into(merged, key, value, _join(f"{where}.$or[{i}]" if where else f"$or[{i}]", key), key)
        out.append(merged)
    if len(out) > MAX_OR_ALTERNATIVES:
        raise PatternError(f"{where or 'pattern'}: $or expands to over {MAX_OR_ALTERNATIVES} alternatives")
    return out


def _only_absence(pattern: Mapping[str, Any]) -> bool:
    """Whether every leaf below is exactly ``[{"exists": false}]`` (and there is no $or)."""
    for key, value in pattern.items():
        if key == "$or":
            return False
        if isinstance(value, dict):
            if not _only_absence(value):
                return False
        elif value != [{"exists": False}]:
            return False
    return True


def _elements(values: list[Any]) -> Iterator[dict[str, Any]]:
    """The objects of an array, arrays nested in it searched too."""
    for v in values:
        if type(v) is dict:
            yield v
        elif type(v) is list:
            yield from _elements(v)


def _nested(key: str, sub: ObjectMatcher, only_absence: bool) -> ObjectMatcher:
    def check(d: Mapping[str, Any]) -> bool:
        value = d.get(key, _MISSING)
        if type(value) is dict:
            return sub(value)
        if type(value) is list:
            elements = list(_elements(value))
            if elements:
                # Nothing pins one element when every field below must be absent: absent from all.
                return all(map(sub, elements)) if only_absence else any(map(sub, elements))
        # Absent or a scalar: only `exists: false` leaves below can still match.
        return sub(_EMPTY)

    return check


def _field(key: str, leaf: Pred) -> ObjectMatcher:
    return lambda d: leaf(d.get(key, _MISSING))


# --- leaves: a list of alternatives ---------------------------------------------------------


class _Leaf:
    """The alternatives of one leaf, sorted by how they are tested."""

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[float] = set()
        self.constants: list[Any] = []  # True, False, None (identity-compared)
        self.preds: list[Pred] = []
        self.exists_true = False
        self.exists_false = False


def _compile_leaf(values: list[Any], where: str) -> Pred:
    if not values:
        raise PatternError(f"{where}: the list of values to match must not be empty")
    leaf = _Leaf()
    for value in values:
        _add_alternative(leaf, value, where)
    return _leaf_matcher(leaf)


def _add_alternative(leaf: _Leaf, value: Any, where: str) -> None:
    if type(value) is str:
        leaf.strings.add(value)
    elif value is None or type(value) is bool:
        leaf.constants.append(value)
    elif type(value) in (int, float):
        leaf.numbers.add(_finite(value, where))
    elif isinstance(value, dict):
        if len(value) != 1:
            raise PatternError(f"{where}: an operator object has exactly one key, got {sorted(value)}")
        ((op, operand),) = value.items()
        if op == "exists":
            if type(operand) is not bool:
                raise PatternError(f"{where}: exists expects true or false, got {operand!r}")
            leaf.exists_true |= operand
            leaf.exists_false |= not operand
        else:
            leaf.preds.append(_operator(op, operand, where))
    else:
        raise PatternError(f"{where}: cannot match against {value!r} (use a string, number, bool, null)")


def _scalar_matcher(leaf: _Leaf) -> Pred:
    strings = frozenset(leaf.strings)
    numbers = frozenset(leaf.numbers)
    constants = tuple(leaf.constants)
    preds = tuple(leaf.preds)
    if not numbers and not constants and not preds:
        return lambda x: type(x) is str and x in strings
    if not strings and not numbers and not constants and len(preds) == 1:
        return preds[0]

    def scalar(x: Any) -> bool:
        t = type(x)
        if t is str:
            if x in strings:
                return True
        elif t is int or t is float:
            if x in numbers:
                return True
        elif any(x is c for c in constants):
            return True
        return any(p(x) for p in preds)

    return scalar


def _leaf_matcher(leaf: _Leaf) -> Pred:
    scalar = _scalar_matcher(leaf)
    exists_true, exists_false = leaf.exists_true, leaf.exists_false

    def match(v: Any) -> bool:
        t = type(v)
        if t is list:
            values = list(_flatten(v))
            if not values:
                return exists_false
            return exists_true or any(scalar(x) for x in values)
        if v is _MISSING or t is dict:
            return exists_false
        return exists_true or scalar(v)

    return match


def _flatten(values: list[Any]) -> Iterator[Any]:
    for v in values:
        if type(v) is list:
            yield from _flatten(v)
        elif type(v) is not dict:
            yield v


# --- operators -------------------------------------------------------------------------------


def _operator(op: str, operand: Any, where: str) -> Pred:
    if op == "prefix":
        return _affix(operand, where, "prefix", str.startswith)
    if op == "suffix":
        return _affix(operand, where, "suffix", str.endswith)
    if op == "equals-ignore-case":
        folded = _string(operand, where, op).casefold()
        return lambda x: type(x) is str and x.casefold() == folded
    if op == "anything-but":
        return _anything_but(operand, where)
    if op == "numeric":
        return _numeric(operand, where)
    if op == "wildcard":
        regex = _wildcard_regex(_string(operand, where, op), where)
        return lambda x: type(x) is str and regex.fullmatch(x) is not None
    if op == "cidr":
        return _cidr(operand, where)
    raise PatternError(f"{where}: unknown operator {op!r} (use one of {', '.join(_OPERATORS)})")


def _string(operand: Any, where: str, op: str) -> str:
    if type(operand) is not str:
        raise PatternError(f"{where}: {op} expects a string, got {operand!r}")
    return operand


def _affix(operand: Any, where: str, op: str, test: Callable[[str, str], bool]) -> Pred:
    if isinstance(operand, dict):
        if list(operand) != ["equals-ignore-case"]:
            raise PatternError(f'{where}: {op} expects a string or {{"equals-ignore-case": "..."}}')
        folded = _string(operand["equals-ignore-case"], where, f"{op} equals-ignore-case").casefold()
        return lambda x: type(x) is str and test(x.casefold(), folded)
    text = _string(operand, where, op)
    return lambda x: type(x) is str and test(x, text)


def _finite(value: Any, where: str) -> float:
    try:
        number = float(value)
    except OverflowError:  # an integer of 400 digits: no float holds it
        number = math.inf
    if not math.isfinite(number):
        raise PatternError(f"{where}: numbers must be finite, got {value!r}")
    return number


# anything-but ------------------------------------------------------------------------------


def _anything_but(operand: Any, where: str) -> Pred:
    where_ab = f"{where}: anything-but"
    if isinstance(operand, dict):
        return _anything_but_operator(operand, where)
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise PatternError(f"{where_ab} expects a non-empty list")
    if all(type(v) is str for v in values):
        excluded_strings = frozenset(values)
        return lambda x: not (type(x) is str and x in excluded_strings)
    if all(type(v) in (int, float) for v in values):
        excluded_numbers = frozenset(_finite(v, where) for v in values)
        return lambda x: not ((type(x) is int or type(x) is float) and x in excluded_numbers)
    raise PatternError(
        f"{where_ab} expects a string, a number, a list of only strings or only numbers, or an "
        f"object with one of {', '.join(_ANYTHING_BUT_OPERATORS)}; got {operand!r}"
    )


def _anything_but_operator(operand: dict[str, Any], where: str) -> Pred:
    if len(operand) != 1 or next(iter(operand)) not in _ANYTHING_BUT_OPERATORS:
        raise PatternError(
            f"{where}: anything-but takes an object with one of {', '.join(_ANYTHING_BUT_OPERATORS)}, "
            f"got {sorted(operand)}"
        )
    ((op, inner),) = operand.items()
    items = inner if isinstance(inner, list) else [inner]
    if not items:
        raise PatternError(f"{where}: anything-but {op} expects a non-empty string or list of strings")
    for item in items:
        if op in ("prefix", "suffix") and item == "":
            raise PatternError(
                f"{where}: anything-but {op} must not be empty (every string has the empty {op}, "
                f"so the value could never match; EventBridge refuses it too)"
            )
    preds = tuple(_operator(op, _string(item, where, f"anything-but {op}"), where) for item in items)
    return lambda x: not any(p(x) for p in preds)


# numeric -----------------------------------------------------------------------------------


def _numeric(operand: Any, where: str) -> Pred:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise PatternError(f"{where}: {_NUMERIC_HINT}, got {operand!r}")
    pairs = [(operand[i], operand[i + 1]) for i in range(0, len(operand), 2)]
    for op, num in pairs:
        if op not in ("=", "<", "<=", ">", ">="):
            raise PatternError(f"{where}: numeric operator {op!r} is not one of =, <, <=, >, >=")
        if type(num) not in (int, float):
            raise PatternError(f"{where}: {_NUMERIC_HINT}; {num!r} is not a number")
    if pairs[0][0] == "=":
        if len(pairs) != 1:
            raise PatternError(f'{where}: numeric "=" cannot be combined with a range')
        target = _finite(pairs[0][1], where)
        return lambda x: (type(x) is int or type(x) is float) and x == target
    return _numeric_range(pairs, where)


def _numeric_range(pairs: list[tuple[str, Any]], where: str) -> Pred:
    lower: tuple[float, bool] | None = None  # (bound, inclusive)
    upper: tuple[float, bool] | None = None
    for op, num in pairs:
        bound = (_finite(num, where), op.endswith("="))
        if op.startswith(">"):
            if lower is not None:
                raise PatternError(f"{where}: numeric has two lower bounds ({_NUMERIC_HINT})")
            lower = bound
        elif op.startswith("<"):
            if upper is not None:
                raise PatternError(f"{where}: numeric has two upper bounds ({_NUMERIC_HINT})")
            upper = bound
        else:
            raise PatternError(f'{where}: numeric "=" cannot be combined with a range')
    lo, lo_inc = lower if lower is not None else (-math.inf, False)
    hi, hi_inc = upper if upper is not None else (math.inf, False)
    if lo > hi or (lo == hi and not (lo_inc and hi_inc)):
        raise PatternError(f"{where}: numeric range is empty: lower bound {lo} is not below upper bound {hi}")

    def in_range(x: Any) -> bool:
        if type(x) is not int and type(x) is not float:
            return False
        above = x >= lo if lo_inc else x > lo
        return above and (x <= hi if hi_inc else x < hi)

    return in_range


# wildcard and cidr -------------------------------------------------------------------------


def _wildcard_regex(text: str, where: str) -> re.Pattern[str]:
    try:
        return wildcard_regex(text)
    except ValueError as exc:
        raise PatternError(f"{where}: {exc}") from None


def _check_complexity(pattern: Mapping[str, Any]) -> None:
    """Refuse wildcards EventBridge would call "Rule is too complex" (workflows/wildcards.py)."""
    by_field: dict[str, list[str]] = {}
    _collect_wildcards(pattern, "", by_field)
    for field, texts in by_field.items():
        score = complexity(texts)
        if score > MAX_COMPLEXITY:
            raise PatternError(
                f"{field}: Rule is too complex: its wildcards {', '.join(map(repr, texts))} can keep "
                f"over {MAX_COMPLEXITY} partial matches alive at once (EventBridge's limit); use fewer "
                f"* or a longer fixed text before the first *, or prefix/suffix instead"
            )


def _collect_wildcards(pattern: Mapping[str, Any], path: str, out: dict[str, list[str]]) -> None:
    for key, value in pattern.items():
        if key == "$or":
            for branch in value:
                _collect_wildcards(branch, path, out)
        elif isinstance(value, dict):
            _collect_wildcards(value, _join(path, key), out)
        else:
            for alt in value:
                text = _wildcard_text(alt)
                out.setdefault(_join(path, key), []).extend(text)


def _wildcard_text(alt: Any) -> list[str]:
    if not isinstance(alt, dict):
        return []
    if "wildcard" in alt:
        return [alt["wildcard"]]
    inner = alt.get("anything-but")
    if isinstance(inner, dict) and "wildcard" in inner:
        texts = inner["wildcard"]
        return texts if isinstance(texts, list) else [texts]
    return []


def _cidr(operand: Any, where: str) -> Pred:
    text = _string(operand, where, "cidr")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise PatternError(f"{where}: cidr {text!r} is not an IPv4 or IPv6 network like 10.0.0.0/24") from exc
    if "/" not in text:
        raise PatternError(f"{where}: cidr {text!r} needs a prefix length, e.g. {text}/32")

    def in_network(x: Any) -> bool:
        if type(x) is not str:
            return False
        try:
            return ipaddress.ip_address(x) in network
        except ValueError:
            return False

    return in_network


def _json(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
