"""Templates: native types, data never rendered as a template, a sandbox, undefined names as errors."""

import time

import pytest

from workflows.errors import TemplateError
from workflows.templating import TemplateCompileError, compile_value

CTX = {
    "event": {"detail": {"key": "a.jpg", "size": 42, "note": "{{ 7*7 }}", "tags": ["x", "y"]}},
    "params": {"size": 128, "flag": True},
    "steps": {"probe": {"output": {"width": 640}, "status": "SUCCEEDED", "error": None}},
    "run": {"id": "r-1", "workflow": "thumbnails", "started_at": "2026-01-01T00:00:00Z"},
}


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("{{ params.size }}", 128),
        ("{{ params.flag }}", True),
        ("{{ event.detail.tags }}", ["x", "y"]),
        ("{{ steps.probe.output.width > params.size }}", True),
        ("  {{ event.detail.size * 2 }} ", 84),
        ("{{ event.detail }}", CTX["event"]["detail"]),
        ("size={{ params.size }}", "size=128"),
        ("{{ params.size }}{{ params.size }}", "128128"),
        ("{% if params.flag %}on{% endif %}", "on"),
        ("plain text", "plain text"),
    ],
)
def test_a_single_expression_keeps_its_native_type(source: str, value: object) -> None:
    assert compile_value(source, "steps.a.input").render(CTX) == value


def test_nested_values_render_to_fresh_containers() -> None:
    renderable = compile_value({"k": "{{ event.detail.key }}", "n": [1, "{{ params.size }}"], "z": None}, "x")
    first = renderable.render(CTX)
    assert first == {"k": "a.jpg", "n": [1, 128], "z": None}
    first["n"].append("mutated")
    assert renderable.render(CTX) == {"k": "a.jpg", "n": [1, 128], "z": None}
    assert renderable.variables == {"event", "params", "params.size"}


def test_event_data_is_a_value_never_a_template() -> None:
    assert compile_value("{{ event.detail.note }}", "x").render(CTX) == "{{ 7*7 }}"
    assert compile_value("note: {{ event.detail.note }}", "x").render(CTX) == "note: {{ 7*7 }}"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "x{{ event.__class__ }}",
        "{{ params.size.__class__.__base__ }}",
    ],
)
def test_the_sandbox_refuses_internals(source: str) -> None:
    with pytest.raises(TemplateError, match=r"steps\.a\.input"):
        compile_value(source, "steps.a.input").render(CTX)


@pytest.mark.parametrize(
    "source",
    [
        "{{ params.missing }}",
        "x={{ params.missing }}",
        "{{ nothing }}",
        "{% if params.missing %}y{% endif %}",
    ],
)
def test_undefined_names_are_errors_naming_the_field(source: str) -> None:
    with pytest.raises(
        TemplateError, match=r"^steps\.a\.when: cannot render .*(is undefined|has no attribute 'missing')"
    ):
        compile_value(source, "steps.a.when").render(CTX)


def test_syntax_errors_are_caught_at_compile_time_with_the_field() -> None:
    with pytest.raises(TemplateCompileError) as info:
        compile_value({"n": ["ok", "{{ 1 + }}"]}, "steps.a.input")
    assert info.value.where == "steps.a.input.n[1]"
    assert "template syntax error" in info.value.problem


def test_static_values_are_flagged_and_cheap() -> None:
    static = compile_value({"a": [1, "two", None]}, "x")
    assert static.is_static
    assert not compile_value({"a": ["{{ run.id }}"]}, "x").is_static
    plain = compile_value("just text", "x")
    start = time.perf_counter()
    for _ in range(10_000):
        plain.render(CTX)
    assert (time.perf_counter() - start) / 10_000 < 5e-6


def test_variables_record_step_and_param_references() -> None:
    renderable = compile_value("{{ steps.probe.output.w + steps['resize'].output + params.size }}", "x")
    assert renderable.variables == {"steps", "steps.probe", "steps.resize", "params", "params.size"}
    loop = compile_value("{% for t in event.detail.tags %}{{ t }}{% endfor %}", "x")
    assert loop.variables == {"event"}
    assert loop.render(CTX) == "xy"


def test_fan_out_names() -> None:
    renderable = compile_value({"item": "{{ item }}", "at": "{{ index }}"}, "x")
    assert renderable.render({**CTX, "item": {"k": 1}, "index": 3}) == {"item": {"k": 1}, "at": 3}
