"""EventBridge wildcards: the text to a regex, and the complexity limit a rule must stay under.

EventBridge refuses a rule whose wildcards could keep too many partial matches alive at once
("Rule is too complex"): matching such a rule costs time on every event. Its matcher
(event-ruler) measures this with ``MachineComplexityEvaluator``: the most wildcard-pattern
positions that one input string can leave active at the same time, over all the wildcard and
``anything-but`` wildcard patterns on one field (the maximum over fields). :func:`complexity`
computes that number by walking the subset construction of the patterns' automaton, so
``"*"`` is 1, ``"a*b"`` 2, ``"a*bbb"`` 4 and ``"*ab*ad"`` 4, as in event-ruler's own tests.

AWS does not publish EventBridge's limit. :data:`MAX_COMPLEXITY` is 10, the per-rule figure
event-ruler's README gives as its example, and a cut that refuses what EventBridge was seen to
refuse (four ``*:stack/NAME/*`` wildcards on one field: 12) while keeping what it accepted
(three: 9); see docs/events.md. Identical patterns count once, as in event-ruler.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

__all__ = ["MAX_COMPLEXITY", "complexity", "wildcard_regex"]

#: the largest complexity a pattern may have; one more is "Rule is too complex"
MAX_COMPLEXITY = 10
#: subset states explored before giving up and calling the rule too complex (bounds load time)
_MAX_STATES = 20_000
_STAR = None  # a token: None is `*`, a one-character string is that character


def wildcard_regex(text: str) -> re.Pattern[str]:
    """The anchored regex of a wildcard; raises ValueError saying what is wrong with ``text``."""
    return re.compile("".join(".*" if t is _STAR else re.escape(t) for t in _tokens(text)), re.DOTALL)


def _tokens(text: str) -> list[str | None]:
    tokens: list[str | None] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in ("*", "\\"):
                raise ValueError(f"wildcard {text!r}: only \\* and \\\\ may be escaped")
            tokens.append(nxt)
            i += 2
            continue
        if ch == "*":
            if text[i + 1 : i + 2] == "*":
                raise ValueError(f"wildcard {text!r} has consecutive * (use a single *)")
            tokens.append(_STAR)
        else:
            tokens.append(ch)
        i += 1
    return tokens


State = frozenset[tuple[int, int]]  # (pattern, index of the token that consumed the last character)


def complexity(patterns: Iterable[str], cap: int = MAX_COMPLEXITY + 1) -> int:
    """The most pattern positions one input can keep active at once, counted up to ``cap``.

    Patterns must be valid wildcards (see :func:`wildcard_regex`).
    """
    tokens = [_tokens(p) for p in dict.fromkeys(patterns)]
    named: list[str] = sorted({t for ts in tokens for t in ts if t is not None})
    alphabet: list[object] = [*named, object()]  # the object stands for every other character
    start: State = frozenset((p, -1) for p in range(len(tokens)))
    seen = {start}
    queue = deque([start])
    best = 0
    while queue:
        state = queue.popleft()
        for ch in alphabet:
            nxt = _step(tokens, state, ch)
            if not nxt or nxt in seen:
                continue
            if len(seen) >= _MAX_STATES:
                return cap
            seen.add(nxt)
            best = max(best, _size(tokens, nxt))
            if best >= cap:
                return cap
            queue.append(nxt)
    return best


def _step(tokens: list[list[str | None]], state: State, ch: object) -> State:
    nxt: set[tuple[int, int]] = set()
    for p, i in state:
        ts = tokens[p]
        if i >= 0 and ts[i] is _STAR:
            nxt.add((p, i))  # the star goes on consuming
        j = i + 1
        if j < len(ts) and ts[j] is _STAR:
            nxt.add((p, j))  # the next star consumes ch
            j += 1  # ... or matches nothing, and the token after it must be ch
        if j < len(ts) and ts[j] == ch:
            nxt.add((p, j))
    return frozenset(nxt)


def _size(tokens: list[list[str | None]], state: State) -> int:
    """Active positions, plus a star that could start right after one (event-ruler counts it too)."""
    size = len(state)
    for p, i in state:
        ts = tokens[p]
        if i + 1 < len(ts) and ts[i + 1] is _STAR and (p, i + 1) not in state:
            size += 1
    return size
