"""Hostile workflow files: any document gives a Workflow or readable SpecErrors, never another exception.

Whole documents are drawn from the workflow language's own shape (triggers, params, steps of
every kind, retries, notify) with hostile leaves: NaN and infinity, 400-digit numbers, durations
and sizes past every bound, Unicode digits, NUL characters, templates, shell scripts, volumes
outside the allow-list; then some are dumped as YAML and mutated as text (aliases, tags, stray
indentation). An accepted workflow is checked too: finite bounded numbers, no template or
``Ref::`` in a shell script, no volume outside the folders given. Durations, sizes, templates,
event patterns and shell argv get their own properties.

``CI`` set: derandomized (``tests/support/hypothesis_profiles.py``), the same examples each run.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from tests.support.hypothesis_profiles import examples
from workflows.errors import PatternError, SpecError, SpecErrors, TemplateError, UnitError
from workflows.loader import load_file, validate
from workflows.patterns import compile_pattern
from workflows.shell import data_in_script, script_index
from workflows.spec import Workflow
from workflows.templating import compile_value
from workflows.units import MAX_DURATION_S, MAX_SIZE, parse_duration, parse_size

# --- leaves ---------------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-5, 100),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\0", "a\0b", "²", "١٢", "\uff15", "\ud7ff", "x" * 5000, "../../etc/passwd",
                     "~/x", "${env:NOPE}", "Ref::v", "{{", "}}", "{% if %}", "-", "*", "?", ":", "null"]),
)  # fmt: skip
TEXT = st.one_of(st.text(max_size=12), TEXT)
DURATIONS = st.one_of(
    st.sampled_from(["30s", "10m", "1h30m", "500ms", "2d", "36500d", "36501d", "0s", "1.5h", "-5s", "5 s",
                     "99999999999999999999d", "9" * 400 + "s", "²s", "1e3s", "nan", "inf", "1h1h1h", "s"]),
    st.builds("{}{}".format, st.integers(0, 10**25), st.sampled_from(["ms", "s", "m", "h", "d", ""])),
    NUMBERS,
)  # fmt: skip
SIZES = st.one_of(
    st.sampled_from(["256MiB", "1GiB", "512MB", "64KiB", "1PiB", "1024PiB", "1025PiB", "2EiB", "0", "1.5GiB",
                     "9" * 400, "9" * 400 + "GiB", "²MiB", "-1MiB", "1 MiB", "1\tMiB", "MiB", "1e9"]),
    st.builds("{}{}".format, st.integers(0, 10**22), st.sampled_from(["B", "KiB", "MB", "TiB", "", "XB"])),
    NUMBERS,
)  # fmt: skip
TEMPLATES = st.one_of(
    st.sampled_from(["{{ params.v }}", "{{ event.detail.x }}", "{{ steps.a.output }}", "{{ item }}",
                     "{{ steps.b.output.n > params.n }}", "x-{{ params.v }}-y", "{{ 1e400 }}",
                     "{{ 9**9**9 }}",
                     "{{ 'a' * 10**10 }}", "{{ " + "(" * 300 + "1" + ")" * 300 + " }}", "{{ ", "{{ }}",
                     "{% if params.v %}a{% endif %}", "{{ params.nope }}", "{{ ''.__class__ }}",
                     "{{ event|attr('__init__') }}", "{{ nope }}", "{{ steps.zz.output }}"]),
    st.builds("{{{{ {} }}}}".format, st.text(alphabet=string.printable, max_size=20)),
)  # fmt: skip
LEAF = st.one_of(NUMBERS, TEXT, st.booleans(), st.none(), DURATIONS, SIZES, TEMPLATES)
JSONISH = st.recursive(
    LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3), max_leaves=4
)


@st.composite
def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], odds: int = 20) -> Any:
    """``good`` ``odds`` times in ``odds + 1``, else any hostile value."""
    return draw(good) if draw(st.sampled_from([True] * odds + [False])) else draw(LEAF)


def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


# --- documents: valid fields, each now and then hostile --------------------------------------------

GOOD_DURATIONS = st.sampled_from(["30s", "10m", "1h30m", "500ms", "2d", "36500d", 5, 0.5])
GOOD_SIZES = st.sampled_from(["256MiB", "1GiB", "64KiB", 4096, "1PiB"])
GOOD_TEMPLATES = st.sampled_from(["{{ params.v }}", "{{ event.detail }}", "x-{{ params.v }}-y",
                                  "{% if params.v %}a{% endif %}", "static"])  # fmt: skip
GOOD_JSON = st.recursive(
    st.one_of(st.integers(-1000, 1000), st.text(max_size=5), st.floats(-1e6, 1e6), st.booleans(), st.none()),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=4,
)
GOOD_STEP_NAMES = st.sampled_from(["a", "b", "c"])
STEP_NAMES = _mostly(GOOD_STEP_NAMES).map(str)
SHELL_COMMANDS = st.one_of(
    st.lists(TEXT | TEMPLATES | st.sampled_from(["sh", "-c", "bash", "-euo", "env", "A=1", "Ref::v"]),
             max_size=6),
    st.sampled_from([["sh", "-c", "echo {{ params.v }}"], ["env", "bash", "-c", "Ref::v"], "sh -c 'echo hi'",
                     ["/bin/sh", "-ec", "echo Ref::v"], ["busybox", "sh", "-c", "{% if 1 %}x{% endif %}"]]),
)  # fmt: skip
GOOD_COMMANDS = st.sampled_from([["echo", "{{ params.v }}"], ["sh", "-c", 'echo "$V"'], ["echo", "Ref::v"],
                                 ["sh", "-c", 'echo "$1"', "sh", "{{ params.v }}"],
                                 ["sh", "-c", 'echo "$1"', "sh", "Ref::v"]])  # fmt: skip
VOLUMES = st.sampled_from(["/etc:/etc", "/:/host", "data:/d:rw", "./x:/x:rx", "/data", "./a\0:/b",
                           "../../..:/up", "::", "a:b:c:d", "./data/../..:/up"]) | TEXT  # fmt: skip
GOOD_VOLUMES = st.sampled_from(["./data:/data:ro", "./data/in:/in", "data/out:/out:rw"])
CONTAINER = _maybe(
    image=_mostly(st.just("busybox:1.36")),
    command=_mostly(GOOD_COMMANDS | SHELL_COMMANDS),
    env=_mostly(st.just({"V": "{{ params.v }}"})),
    vcpus=_mostly(st.sampled_from([0.5, 1, 2]) | NUMBERS),
    memory=_mostly(GOOD_SIZES | SIZES),
    volumes=_mostly(st.lists(_mostly(GOOD_VOLUMES, 2).map(str) | VOLUMES, max_size=2)),
    parameters=_mostly(st.just({"v": "x"})),
    network=_mostly(st.just("none")),
).map(lambda c: {"image": "busybox:1.36", **c})
RETRY = _maybe(
    attempts=_mostly(st.integers(1, 10)),
    interval=_mostly(GOOD_DURATIONS | DURATIONS),
    backoff_rate=_mostly(st.sampled_from([1, 2.0]) | NUMBERS),
    max_delay=_mostly(GOOD_DURATIONS | DURATIONS),
    jitter=_mostly(st.sampled_from(["full", "none"])),
)
KINDS = st.one_of(
    st.fixed_dictionaries({"function": _mostly(st.just("handlers:ok"))}),
    st.fixed_dictionaries({"container": _mostly(CONTAINER)}),
    st.fixed_dictionaries({"wait": _mostly(GOOD_DURATIONS | DURATIONS | st.just("2026-01-01T00:00:00"))}),
    st.fixed_dictionaries({"fail": _mostly(st.just({"error": "Bad", "cause": "{{ params.v }}"}))}),
)
STEP = st.builds(
    lambda kind, extra: {**kind, **extra},
    KINDS,
    _maybe(
        needs=_mostly(st.lists(STEP_NAMES, max_size=1)),
        when=_mostly(GOOD_TEMPLATES | TEMPLATES),
        input=_mostly(GOOD_JSON | GOOD_TEMPLATES | JSONISH),
        timeout=_mostly(GOOD_DURATIONS | DURATIONS),
        memory=_mostly(GOOD_SIZES | SIZES),
        retry=_mostly(RETRY),
        on_failure=_mostly(st.sampled_from(["fail", "continue"])),
    ),
)
TRIGGER = st.one_of(
    st.fixed_dictionaries(
        {"schedule": _mostly(st.sampled_from(["rate(5 minutes)", "cron(0 2 * * ? *)", "*/5 * * * *"]))},
        optional={"timezone": _mostly(st.sampled_from(["UTC", "Europe/Berlin"]) | TEXT),
                  "catchup_window": _mostly(GOOD_DURATIONS | DURATIONS)},
    ),
    st.fixed_dictionaries(
        {"webhook": _mostly(st.fixed_dictionaries(
            {"name": _mostly(st.just("hook")), "auth": _mostly(st.just("none"))},
            optional={"tolerance": _mostly(GOOD_DURATIONS | DURATIONS),
                      "max_body": _mostly(GOOD_SIZES | SIZES),
                      "timestamp_header": _mostly(st.just("X-Timestamp")),
                      "schema": _mostly(st.just({"type": "object"}) | JSONISH)}))}
    ),
    st.fixed_dictionaries({"files": _mostly(st.fixed_dictionaries(
        {"path": _mostly(st.just("inbox") | TEXT)}, optional={"stable": _mostly(GOOD_DURATIONS)}))}),
    st.fixed_dictionaries({"event": _mostly(st.fixed_dictionaries(
        {"pattern": _mostly(st.just({"source": ["sluice.run"]}) | JSONISH)}))}),
)  # fmt: skip
PARAMS = st.fixed_dictionaries(
    {"v": _mostly(st.just({"type": "string", "default": "x"}))},
    optional={"n": _mostly(st.fixed_dictionaries({"type": st.just("number")},
                                                 optional={"default": _mostly(GOOD_JSON | NUMBERS)}))},
)  # fmt: skip
DOCUMENT = st.builds(
    lambda steps, extra: {"name": "hostile", "params": {"v": "string"}, "steps": steps, **extra},
    _mostly(st.dictionaries(STEP_NAMES, STEP, min_size=1, max_size=3)),
    _maybe(
        params=_mostly(PARAMS),
        triggers=_mostly(st.lists(TRIGGER, max_size=2)),
        outputs=_mostly(GOOD_JSON | GOOD_TEMPLATES | JSONISH),
        description=_mostly(st.text(max_size=10)),
    ),
)
MUTATIONS = st.sampled_from(["&a ", "*a", "!!binary ", "!!set ", "!!python/object ", ": ", "- ", "\t", "\n  ",
                             "{", "}", "[", "]", "'", '"', "#", "? ", "|", ">", "%YAML 1.1\n", "\0", "\x85",
                             "---\n", "...", "<<: *a\n", ".nan", ".inf", "9" * 400])  # fmt: skip


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """A drawn document as YAML text, with a few hostile edits at drawn places."""
    text = yaml.safe_dump(draw(DOCUMENT), allow_unicode=draw(st.booleans()), width=10**6)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(MUTATIONS) + text[at + cut :]
    return text


# --- the properties -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "handlers.py").write_text("def ok(event, context):\n    return {}\n")
    (root / "data").mkdir()
    return root


def check_errors(errors: list[SpecError], path: Path) -> None:
    for err in errors:
        assert isinstance(err, SpecError), err
        line = str(err)
        assert line.startswith(f"{path}: ") and "Traceback" not in line, line
        assert err.problem and "\n" not in err.problem, line
        assert len(line) < 12_000, line[:200]


def check_workflow(wf: Workflow, roots: list[Path]) -> None:
    for step in wf.steps.values():
        for seconds in (step.timeout_s, step.retry.interval_s, step.retry.max_delay_s):
            assert seconds is None or 0 <= seconds <= MAX_DURATION_S
        assert step.memory_bytes is None or 0 <= step.memory_bytes <= MAX_SIZE
        assert math.isfinite(step.retry.backoff_rate)
        if step.wait is not None and step.wait.seconds is not None:
            assert 0 <= step.wait.seconds <= MAX_DURATION_S
        if step.container is not None:
            c = step.container
            assert math.isfinite(c.vcpus) and 0 <= c.memory_bytes <= MAX_SIZE
            sources = [getattr(part, "source", getattr(part, "value", "")) for part in c.command or ()]
            assert data_in_script([str(s) for s in sources]) is None, sources
            for vol in c.volumes:
                real = (wf.dir / vol.host).resolve()
                assert any(real == r or r in real.parents for r in roots), vol


def load_one(folder: Path, text: str) -> str:
    path = folder / "wf.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    roots = [folder / "data"]
    errors = validate(path, volume_roots=roots)
    check_errors(errors, path)
    if errors:
        return "refused"
    try:
        wf = load_file(path, volume_roots=roots)
    except SpecErrors as exc:  # pragma: no cover - validate said it loads
        raise AssertionError(f"validate found nothing but load_file refused: {exc}") from None
    check_workflow(wf, roots)
    return "accepted"


@examples(500)
@given(DOCUMENT)
def test_any_workflow_document_loads_or_gives_spec_errors(folder: Path, doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True, width=10**6)
    event(load_one(folder, text))


@examples(500)
@given(yaml_texts())
def test_any_mutated_workflow_text_loads_or_gives_spec_errors(folder: Path, text: str) -> None:
    event(load_one(folder, text))


@examples(2000)
@given(st.one_of(DURATIONS, LEAF, st.lists(LEAF, max_size=2)))
def test_any_duration_is_seconds_in_bounds_or_a_unit_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except UnitError as exc:
        assert isinstance(exc, ValueError) and str(exc) and len(str(exc)) < 300
        return
    assert isinstance(seconds, float) and 0 <= seconds <= MAX_DURATION_S


@examples(2000)
@given(st.one_of(SIZES, LEAF, st.lists(LEAF, max_size=2)))
def test_any_size_is_bytes_in_bounds_or_a_unit_error(value: Any) -> None:
    try:
        size = parse_size(value)
    except UnitError as exc:
        assert isinstance(exc, ValueError) and str(exc) and len(str(exc)) < 300
        return
    assert isinstance(size, int) and 0 <= size <= MAX_SIZE


TEMPLATE_TEXT = st.lists(
    st.one_of(
        TEMPLATES,
        st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", " if ", " else ", " endif ", "event", "params.v",
                         ".detail", "[0]", "|int", "|tojson", "|length", "|attr('x')", " * ", " ** ", " ~ ",
                         "(", ")", "'", '"', "9" * 50, "1e400", "-", "range(3)", ".__class__", "lipsum"]),
        st.text(max_size=5),
    ),
    max_size=8,
).map("".join)  # fmt: skip
CONTEXTS = st.fixed_dictionaries(
    {"event": st.fixed_dictionaries({"detail": JSONISH}), "params": st.dictionaries(st.just("v"), JSONISH),
     "steps": st.just({}), "run": st.just({"id": "r-1"})}
)  # fmt: skip


@examples(800)
@given(TEMPLATE_TEXT, CONTEXTS)
def test_any_template_compiles_and_renders_or_gives_a_template_error(
    source: str, ctx: dict[str, Any]
) -> None:
    try:
        renderable = compile_value(source, "steps.a.input")
    except TemplateError as exc:
        event("refused at compile")
        assert "Traceback" not in str(exc)
        return
    try:
        renderable.render(ctx)
    except TemplateError as exc:
        event("refused at render")
        assert str(exc).startswith("steps.a.input: ")
        return
    event("rendered")


@examples(1200)
@given(
    st.one_of(JSONISH, st.dictionaries(st.sampled_from(["source", "detail", "$or", "x"]), JSONISH)), JSONISH
)
def test_any_event_pattern_compiles_and_matches_or_gives_a_pattern_error(pattern: Any, data: Any) -> None:
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        event("refused")
        assert str(exc) and "Traceback" not in str(exc)
        return
    event("compiled")
    assert compiled.matches({"source": "s", "detail": data}) in (True, False)


@examples(1500)
@given(
    st.lists(
        st.one_of(
            TEXT,
            st.sampled_from(
                [
                    "sh",
                    "/bin/bash",
                    "env",
                    "busybox",
                    "-c",
                    "-o",
                    "-ec",
                    "--",
                    "A=1",
                    "-u",
                    "nohup",
                    "{{ x }}",
                    "Ref::v",
                ]
            ),
        ),
        max_size=8,
    )
)
def test_any_argv_has_a_script_index_or_none(argv: list[str]) -> None:
    index = script_index(argv)
    assert index is None or 0 < index < len(argv)
    if index is not None:  # a flag with c came before the script
        assert any(a[:1] in ("-", "+") and "c" in a[1:] for a in argv[:index]), argv
