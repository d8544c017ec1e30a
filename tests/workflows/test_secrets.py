"""The secret rule (workflows/secrets.py): hidden by value, sealed for launch, never widened."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows import secrets
from workflows.loader import load_file

VALUE = "sekrit-$-9f3e1b"


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """Secrets are process-wide: each test registers its own and takes them away again."""
    before = secrets.registered()
    secrets.register({"SLUICE_T_UNIT": VALUE})
    yield
    secrets.unregister(secrets.registered() - before)


def test_hide_replaces_the_value_in_text_json_and_html() -> None:
    assert secrets.hide(f"Bearer {VALUE}") == "Bearer ${env:SLUICE_T_UNIT}"
    assert secrets.hide_json(json.dumps({"a": f'"{VALUE}"'})) == '{"a": "\\"${env:SLUICE_T_UNIT}\\""}'
    assert VALUE not in secrets.hide_html(f"<td>{VALUE}</td>")
    assert secrets.hide_data({"k": [VALUE, 1]}) == {"k": ["${env:SLUICE_T_UNIT}", 1]}


def test_short_values_are_not_hidden_they_would_rewrite_every_number() -> None:
    secrets.register({"SLUICE_T_SHORT": "1"})
    assert secrets.hide("10 11") == "10 11"


def test_a_sealed_value_reveals_exactly_and_payload_references_stay_text() -> None:
    payload = "${env:HOME} and $$ and $"
    sealed = secrets.seal(f"{payload} {VALUE}")
    assert sealed is not None and VALUE not in sealed
    assert secrets.reveal(sealed, {"HOME": "/root", "SLUICE_T_UNIT": VALUE}) == f"{payload} {VALUE}"
    assert secrets.seal("no secret here") is None


def test_reveal_reads_only_registered_names() -> None:
    assert secrets.reveal("${env:HOME}", {"HOME": "/root"}) == "${env:HOME}"


def test_the_log_filter_hides_messages_arguments_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    secrets.install_log_filter(logger)
    try:
        logger.warning("token %s", VALUE)
        try:
            raise ValueError(f"bad {VALUE}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert VALUE not in out.getvalue()
    assert "token ${env:SLUICE_T_UNIT}" in out.getvalue()
    assert "ValueError: bad ${env:SLUICE_T_UNIT}" in out.getvalue()


def test_a_stored_default_reference_gets_its_secret_back_and_nothing_else() -> None:
    defaults = {"token": VALUE, "n": 3}
    stored = {"token": "${env:SLUICE_T_UNIT}", "n": 4}
    assert secrets.restore_defaults(stored, defaults) == {"token": VALUE, "n": 4}
    assert secrets.restore_defaults({"token": "other"}, defaults) == {"token": "other"}


def test_the_loader_lists_the_variables_a_workflow_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_T_LOADED", "loaded-value-1234")
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: w\nparams:\n  t: {default: '${env:SLUICE_T_LOADED}'}\nsteps:\n  a: {wait: {seconds: 1}}\n"
    )
    wf = load_file(path)
    assert wf.secrets == frozenset({"SLUICE_T_LOADED"})
    assert isinstance(wf.params["t"].default, secrets.Secret)
    assert "loaded-value" not in repr(wf.params["t"])


def test_validate_refuses_a_secret_in_a_containers_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.loader import validate

    monkeypatch.setenv("SLUICE_T_ARGV", "argv-value-1234")
    path = tmp_path / "w.yaml"
    command = "[echo, '${env:SLUICE_T_ARGV}']"
    path.write_text(f"name: w\nsteps:\n  a:\n    container: {{image: busybox, command: {command}}}\n")
    (problem,) = validate(path)
    assert problem.path == "steps.a.container.command[1]"
    assert "pass it through env:" in str(problem) and "argv-value" not in str(problem)


def test_a_weak_secret_never_breaks_the_json_it_is_hidden_in() -> None:
    secrets.register({"SLUICE_T_WEAK": "1234", "SLUICE_T_TRUE": "true"})
    text = json.dumps({"n": 12345, "ok": True, "s": "pin 1234", "t": "true"})
    hidden = secrets.hide_json(text)
    assert json.loads(hidden) == {
        "n": 12345, "ok": True, "s": "pin ${env:SLUICE_T_WEAK}", "t": "${env:SLUICE_T_TRUE}"
    }  # fmt: skip
