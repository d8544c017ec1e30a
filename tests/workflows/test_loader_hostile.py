"""Values a red team put in workflow files: each is refused with one readable line, never a traceback.

Every case once validated (and broke the engine later) or crashed ``sluice validate``: NaN and
infinity (a NaN webhook tolerance turned replay protection off, a NaN wait never ends), numbers
past a float's range, durations no timer can hold, YAML aliases that loop or explode, paths with
NUL characters, templates nested past Python's limits.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from workflows.loader import validate

STEP = "steps:\n  a: {function: handlers:ok}\n"
HOOK = "triggers: [{webhook: {name: w, auth: none, %s}}]\n" + STEP


def _lines(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "handlers.py").write_text("def ok(event, context):\n    return {}\n")
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    errors = validate(path)
    prefix = f"{path}: "
    assert all(str(e).startswith(prefix) for e in errors)
    return [str(e)[len(prefix) :] for e in errors]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            HOOK % "tolerance: .nan",
            "triggers[0].webhook.tolerance: must be a finite number, got NaN"
            " (write a number such as 1.5, or a string)",
        ),
        ("steps:\n  a: {wait: .nan}\n", "steps.a.wait: must be a finite number, got NaN"),
        ("steps:\n  a: {wait: -.inf}\n", "steps.a.wait: must be a finite number, got -Infinity"),
        ("steps:\n  a: {function: handlers:ok, timeout: .inf}\n", "steps.a.timeout: must be a finite number"),
        ("steps:\n  a: {container: {image: b, vcpus: .inf}}\n", "steps.a.container.vcpus: must be a finite"),
        (
            "steps:\n  a: {function: handlers:ok, retry: {backoff_rate: .NaN}}\n",
            "steps.a.retry.backoff_rate: must be a finite number, got NaN",
        ),
        (
            "params: {x: {type: number, default: .nan}}\n" + STEP,
            "params.x.default: must be a finite number, got NaN",
        ),
        (
            "steps:\n  a: {function: handlers:ok, input: {deep: [1, {x: .inf}]}}\n",
            "steps.a.input.deep[1].x: must be a finite number, got Infinity",
        ),
        (
            "steps:\n  a: {container: {image: b, env: {X: .nan}}}\n",
            "steps.a.container.env.X: must be a finite number, got NaN",
        ),
        (
            f"steps:\n  a: {{function: handlers:ok, memory: {'9' * 400}}}\n",
            "steps.a.memory: must be a finite number, got a number too large for a float",
        ),
        (
            f"steps:\n  a: {{function: handlers:ok, memory: '{'9' * 400}'}}\n",
            "steps.a.memory: a size can be at most 1 EiB (1152921504606846976 bytes), got",
        ),
        (
            "steps:\n  a: {function: handlers:ok, timeout: 99999999999999999999d}\n",
            'steps.a.timeout: a duration can be at most 100 years (3153600000s, or 36500d), got "99999',
        ),
        (
            f"steps:\n  a: {{function: handlers:ok, timeout: {'9' * 30}}}\n",
            "steps.a.timeout: a duration can be at most 100 years",
        ),
        (HOOK % "max_body: 2EiB", "triggers[0].webhook.max_body: must be a size"),
        (
            "steps:\n  a: {function: handlers:ok, timeout: '\u00b2s'}\n",
            'steps.a.timeout: must be a duration ("500ms", "30s",',
        ),
        (
            "triggers: [{schedule: 'rate(\u00b2 minutes)'}]\n" + STEP,
            "triggers[0].schedule: rate(\u00b2 minutes): the number '\u00b2' must be a positive whole number",
        ),
        (
            f"triggers: [{{schedule: 'rate(5 minutes)', timezone: '{'Z' * 300}'}}]\n" + STEP,
            "triggers[0].timezone: unknown time zone",
        ),
        (
            f"triggers: [{{event: {{pattern: {{detail: {{n: [{{numeric: ['>', {'9' * 400}]}}]}}}}}}}}]\n"
            + STEP,
            "triggers[0].event.pattern.detail.n[0].numeric[1]: must be a finite number",
        ),
        ("steps:\n  a: &x {function: handlers:ok, input: [*x]}\n", "steps.a.input[0]: refers to itself"),
        (
            "steps:\n  a: {function: handlers:ok, input: !!binary aGVsbG8=}\n",
            "steps.a.input: must be a JSON value, got binary data",
        ),
        ("steps:\n  a: {function: handlers:ok, input: !!set {x}}\n", "steps.a.input: must be a JSON value"),
        (
            'triggers: [{files: {path: "in\\0box"}}]\n' + STEP,
            "triggers[0].files.path: is not a usable path: it has a NUL character",
        ),
        (
            HOOK % 'schema: "s\\0.json"',
            "triggers[0].webhook.schema: is not a usable path: it has a NUL character",
        ),
        (
            'steps:\n  a: {container: {image: b, volumes: ["./d\\0:/d"]}}\n',
            "steps.a.container.volumes[0]: is not a usable path: it has a NUL character",
        ),
        (f"steps:\n  a: {{function: '{'m' * 5000}:f'}}\n", "steps.a.function: must be module:callable"),
        (
            "steps:\n  a: {function: handlers:ok, input: '{{ " + "(" * 300 + "1" + ")" * 300 + " }}'}\n",
            "steps.a.input: template nested too deeply to compile: '{{ (((",
        ),
    ],
)
def test_hostile_values_are_one_readable_line(tmp_path: Path, text: str, line: str) -> None:
    lines = _lines(tmp_path, text)
    assert any(got.startswith(line) for got in lines), lines
    assert all("Traceback" not in got and len(got) < 6000 for got in lines)


def test_a_refused_number_is_reported_once_not_again_by_its_reader(tmp_path: Path) -> None:
    assert _lines(tmp_path, HOOK % "tolerance: .inf") == [
        "triggers[0].webhook.tolerance: must be a finite number, got Infinity"
        " (write a number such as 1.5, or a string)"
    ]


def test_aliases_that_expand_to_billions_of_values_are_refused_quickly(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "params:\n  p: {type: object, default: {" + ", ".join(levels) + "}}\n" + STEP
    started = time.monotonic()
    lines = _lines(tmp_path, text)
    assert time.monotonic() - started < 10
    assert lines == [
        "the document holds more than 200000 values (an alias counts each time it is used)"
        " (write the values out, or split the workflow)"
    ]


def test_templates_that_would_build_gigabytes_compile_at_once_and_fail_only_when_rendered(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    assert _lines(tmp_path, "steps:\n  a: {function: handlers:ok, input: '{{ \"a\" * 10**10 }}'}\n") == []
    assert time.monotonic() - started < 10


def test_values_in_bounds_still_load(tmp_path: Path) -> None:
    text = (
        "triggers: [{webhook: {name: w, auth: none, tolerance: 2.5, max_body: 1.5MiB}}]\n"
        "steps:\n  a: {function: handlers:ok, timeout: 36500d, memory: 1PiB, input: {n: 1.0e+300}}\n"
        "  b: {wait: 0.5}\n"
    )
    assert _lines(tmp_path, text) == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # int() of 5,000 digits and date(2026, 13, 45) raised ValueError out of yaml.load
        (f"steps:\n  a: {{function: handlers:ok, timeout: {'9' * 5000}}}\n", "invalid YAML: a number has"),
        ("steps:\n  a: {function: handlers:ok, input: 2026-13-45}\n", "invalid YAML value: month must be in"),
        # libyaml's message spans lines: one problem is one line
        ("\0steps: {}\n", "invalid YAML: unacceptable character #x0000"),
    ],
)
def test_values_yaml_itself_cannot_build_are_one_line(tmp_path: Path, text: str, line: str) -> None:
    lines = _lines(tmp_path, text)
    assert len(lines) == 1 and lines[0].startswith(line) and "\n" not in lines[0], lines


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(b"steps:\n  a: {wait: 1s, description: caf\xe9}\n")
    assert [str(e) for e in validate(path)] == [
        f"{path}: the file is not UTF-8 text (byte 0xe9 at offset 39) (save it as UTF-8)"
    ]


def test_a_schema_file_that_yaml_cannot_build_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_bytes(b"type: object\nx: 2026-13-45\n")
    lines = _lines(tmp_path, HOOK % "schema: schema.yaml")
    assert len(lines) == 1, lines
    assert lines[0].startswith("triggers[0].webhook.schema: cannot read schema file"), lines
