"""Loading workflow files: every problem reported as `file: field.path: what is wrong (what to write)`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.paths import SPECS
from workflows.errors import InputError, SpecErrors
from workflows.loader import Catalog, load_dir, load_file, resolve_input, validate
from workflows.spec import (
    ContainerSpec,
    EventTrigger,
    ExitRule,
    FileTrigger,
    ScheduleTrigger,
    StepSpec,
    WebhookTrigger,
    Workflow,
)

BAD = SPECS / "bad"

# One broken file each, and the exact lines `sluice validate` prints for it (after "file: ").
BROKEN: dict[str, list[str]] = {
    "unknown_field": ["steps.probe.tmeout: unknown field (did you mean timeout?)"],
    "unknown_top_field": ["trigers: unknown field (did you mean triggers?)"],
    "wrong_type_attempts": [
        'steps.resize.retry.attempts: must be an integer from 1 to 10, got "three" (write e.g. attempts: 3)'
    ],
    "attempts_range": [
        "steps.a.retry.attempts: must be an integer from 1 to 10, got 11 (write e.g. attempts: 3)",
        "steps.a.retry.backoff_rate: must be a number >= 1, got 0.5 (write e.g. backoff_rate: 2.0)",
        'steps.a.retry.jitter: must be one of full, none, got "some" (write e.g. jitter: full)',
    ],
    "unknown_needs": ["steps.b.needs: no step named 'c' (steps are: a, b)"],
    "cycle": ["steps: needs form a cycle: a -> b -> c -> a (remove one of the needs on this cycle)"],
    "self_need": ["steps.a.needs: a step cannot need itself (remove a)"],
    "both_kinds": [
        "steps.a: must have exactly one of function, container, wait or fail, got function and container"
        " (write e.g. function: images:probe)"
    ],
    "no_kind": [
        "steps.a: must have exactly one of function, container, wait or fail, got none"
        " (write e.g. function: images:probe)"
    ],
    "bad_duration": [
        'steps.a.timeout: must be a duration ("500ms", "30s", "10m", "1h", "1h30m", "2d" or a number of'
        ' seconds), got "30 sec" (write e.g. timeout: 30s)'
    ],
    "bad_size": [
        'steps.a.memory: must be a size ("512MB", "256MiB", "1GiB", "64KiB" or a number of bytes),'
        ' got "256 megs" (write e.g. memory: 256MiB)'
    ],
    "template_syntax": [
        "steps.a.input.n: template syntax error: unexpected 'end of print statement' in '{{ event.x + }}'"
        " (fix the {{ }} expression)"
    ],
    "unknown_template_var": ["steps.a.when: template uses unknown name 'evnt' (did you mean event?)"],
    "non_upstream": ["steps.b.input: template reads steps.a, which is not upstream of b (add a to needs)"],
    "no_such_step_ref": [
        "steps.a.input: template reads steps.zz, but there is no step named zz (steps are: a)"
    ],
    "missing_module": [
        "steps.a.function: module nosuchmodule_xyz not found: no nosuchmodule_xyz.py beside the workflow"
        " and no installed module (create nosuchmodule_xyz.py next to the workflow file)"
    ],
    "missing_function": [
        "steps.a.function: handlers.py defines no top-level nope"
        " (add def nope(event, context): ... to handlers.py)"
    ],
    "bad_function_ref": [
        'steps.a.function: must be module:callable, got "handlers.ok" (write e.g. function: images:probe)'
    ],
    "param_default_type": [
        'params.size.default: must be of type integer, got "big" (write an integer default, or change type)',
        "params.flag.default: must be of type boolean, got 1 (write a boolean default, or change type)",
        'params.kind.type: must be one of string, integer, number, boolean, object, array, got "text"'
        " (write e.g. type: string)",
    ],
    "webhook_no_auth": [
        "triggers[0].webhook: has no secret and no token, so anyone could start this workflow"
        ' (add secret: "${env:HOOK_SECRET}", or write auth: none)'
    ],
    "command_string": [
        "steps.a.container.command: must be a list of arguments (argv), not a string"
        ' (write a list, e.g. command: [sh, -c, "echo hello"])'
    ],
    "array_out_of_range": [
        "steps.a.array: must be an integer from 2 to 10000, got 1 (write e.g. array: 4)",
        "steps.b.array: must be an integer from 2 to 10000, got 20000 (write e.g. array: 4)",
        "steps.c.array: array is for container steps only (use for_each for other steps)",
    ],
    "item_without_for_each": [
        "steps.a.input: template uses unknown name 'item'"
        " (item exists only in steps with for_each; an array: N child has index)",
        "steps.b.container.env.X: template uses unknown name 'item'"
        " (item exists only in steps with for_each; an array: N child has index)",
    ],
    "unknown_param_ref": [
        "steps.a.when: template uses params.sise, which is not declared"
        " (declare it under params: sise: {type: string})"
    ],
    "missing_env": [
        "triggers[0].webhook.secret: environment variable SLUICE_TEST_SURELY_UNSET is not set"
        " (export SLUICE_TEST_SURELY_UNSET before loading)"
    ],
    "not_a_mapping": ["must be a YAML mapping (write name:, triggers:, params: and steps: at the top level)"],
    "bad_on_failure": [
        'steps.a.on_failure: must be one of fail, continue, got "ignore" (write e.g. on_failure: fail)'
    ],
    "bad_volume": [
        'steps.a.container.volumes[0]: must be host:container or host:container:ro, got "/data"'
        ' (write e.g. "./data:/data:ro")'
    ],
    "exit_rules": [
        "steps.a.retry.evaluate_on_exit: evaluate_on_exit is for container steps only"
        " (use retry.errors for other steps)",
        "steps.b.retry.evaluate_on_exit[0]: a rule needs on_exit_code, on_reason or on_status_reason"
        " (write e.g. on_exit_code: '137')",
        'steps.b.retry.evaluate_on_exit[0].action: must be one of retry, exit, got "stop"'
        " (write e.g. action: retry)",
    ],
    "exit_rule_syntax": [
        "steps.a.retry.evaluate_on_exit[0].on_exit_code: on_exit_code '1x' may hold only digits, optionally"
        " ending with one * (AWS Batch's syntax) (write e.g. on_exit_code: '137' or '13*')",
        "steps.a.retry.evaluate_on_exit[1].on_exit_code: on_exit_code '*3' may hold only digits, optionally"
        " ending with one * (AWS Batch's syntax) (write e.g. on_exit_code: '137' or '13*')",
        "steps.a.retry.evaluate_on_exit[2].on_reason: on_reason 'Out-of-memory*' may hold only letters,"
        " digits, periods, colons and spaces, optionally ending with one * (AWS Batch's syntax)"
        " (write e.g. on_reason: 'OutOfMemoryError*')",
        "steps.a.retry.evaluate_on_exit[3].on_status_reason: on_status_reason 'Essential*container' may hold"
        " only letters, digits, periods, colons and spaces, optionally ending with one * (AWS Batch's"
        " syntax) (write e.g. on_status_reason: 'Essential container*')",
    ],
    "container_retry_errors": [
        "steps.b.retry.errors: a container step picks which failures retry by their exit, not by"
        " error names (drop it; write e.g. evaluate_on_exit: [{on_exit_code: '137', action: retry}])",
        "steps.c.retry.interval: a container step's retry waits at most 1d (use a schedule for longer)",
    ],
    "bad_wait": [
        'steps.a.wait: must be a duration or an ISO timestamp, got "soon"'
        ' (write e.g. wait: 30s or wait: "{{ event.detail.at }}")'
    ],
    "two_trigger_kinds": [
        "triggers[0]: must have exactly one of files, schedule, webhook or event, got schedule and webhook"
        " (write e.g. - schedule: rate(5 minutes))"
    ],
    "bad_names": [
        'name: must use only letters, digits, - and _, got "my flow" (write e.g. name: thumbnails)',
        "steps.re size: a step name uses only letters, digits, - and _ (rename it, e.g. resize-image)",
    ],
    "bad_files_trigger": [
        "triggers[0].files.events: unknown event 'modified' (write created and/or removed)",
        'triggers[0].files.after: must be keep, delete or move:<dir>, got "archive"'
        " (write e.g. after: move:done)",
    ],
    "bad_notify": [
        'notify[0].url: must be an http:// or https:// URL, got "ftp://x"'
        ' (write e.g. url: "http://127.0.0.1:9000/hook")',
        "notify[0].on: unknown run state 'DONE' (use RUNNING, SUCCEEDED, FAILED, CANCELLED)",
    ],
    "for_each_kinds": [
        "steps.capped.max_concurrency: a container step's for_each is one array job; its children run"
        " as the queue's compute environments have room, not in lanes (remove it; to cap the children"
        " running at once, give the step a queue of its own whose environment's max_vcpus allows only"
        " that many)",
        "steps.both.for_each: a step has either for_each or array, not both (keep for_each for one child"
        " per item, each reading SLUICE_ITEM; or array: N for N children)",
        "steps.scripted.container.command[2]: a shell script cannot hold {{ }} or Ref:: (the value would"
        ' run as shell code) (pass the value through env, e.g. env: {V: "{{ params.v }}"} and "$V" in the'
        """ script, or as an argument after the script: [sh, -c, 'echo "$1"', sh, "{{ params.v }}"])""",
        "steps.pause.for_each: for_each runs a function or container step once per item"
        " (make the step a function or a container, or remove for_each)",
    ],
    "trigger_input_var": ["triggers[0].input: template uses unknown name 'params' (use one of event)"],
    "webhook_auth_mismatch": [
        'triggers[0].webhook.secret: auth: hmac needs a secret (add secret: "${env:HOOK_SECRET}")',
        'triggers[1].webhook.token: auth: token needs a token (add token: "${env:HOOK_TOKEN}")',
        "triggers[1].webhook.schema: not a valid JSON Schema: 12 is not valid under any of the given schemas"
        " (see https://json-schema.org)",
        "triggers: trigger name 'a' is used 2 times (give each trigger a unique name)",
        "steps.a.function: json/__init__.py defines no top-level nope"
        " (add def nope(event, context): ... to json/__init__.py)",
    ],
}

# Files whose message comes from a library or a sibling module: a stable prefix is asserted.
BROKEN_PREFIX: dict[str, str] = {
    "yaml_syntax": "line 5: invalid YAML: ",
    "bad_event_pattern": "triggers[0].event.pattern: source: ",
    "bad_schedule": "triggers[0].schedule: ",
}


def _lines(name: str) -> list[str]:
    path = BAD / f"{name}.yaml"
    errors = validate(path)
    prefix = f"{path}: "
    assert all(str(e).startswith(prefix) for e in errors)
    return [str(e)[len(prefix) :] for e in errors]


def test_every_bad_fixture_is_in_a_table() -> None:
    assert {p.stem for p in BAD.glob("*.yaml")} == set(BROKEN) | set(BROKEN_PREFIX)
    assert len(BROKEN) + len(BROKEN_PREFIX) >= 25


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_reports_exactly_these_lines(name: str) -> None:
    assert _lines(name) == BROKEN[name]


@pytest.mark.parametrize("name", sorted(BROKEN_PREFIX))
def test_broken_file_reports_one_line_with_the_field(name: str) -> None:
    lines = _lines(name)
    assert len(lines) == 1
    assert lines[0].startswith(BROKEN_PREFIX[name])


def test_yaml_error_names_the_line_and_says_fix_the_syntax() -> None:
    assert _lines("yaml_syntax")[0].endswith("(fix the YAML syntax)")


def test_schedule_error_comes_from_parse_schedule() -> None:
    pytest.importorskip("workflows.schedules")
    assert "99" in _lines("bad_schedule")[0]


def test_load_file_raises_every_problem_of_the_file() -> None:
    with pytest.raises(SpecErrors) as info:
        load_file(BAD / "attempts_range.yaml")
    assert [e.path for e in info.value.errors] == [
        "steps.a.retry.attempts",
        "steps.a.retry.backoff_rate",
        "steps.a.retry.jitter",
    ]


def test_load_dir_reports_every_file() -> None:
    with pytest.raises(SpecErrors) as info:
        load_dir(BAD)
    files = {Path(e.file).stem for e in info.value.errors}
    assert files == set(BROKEN) | set(BROKEN_PREFIX)
    assert len(str(info.value).splitlines()) == len(info.value.errors)


def test_a_missing_directory_is_one_problem(tmp_path: Path) -> None:
    assert [str(e) for e in validate(tmp_path / "nope")] == [
        f"{tmp_path}/nope: no such directory (give the folder that holds the workflow files)"
    ]


def test_duplicate_names_across_files_name_both_files() -> None:
    root = SPECS / "dup"
    assert [str(e) for e in validate(root)] == [
        f"{root}/b.yaml: name: workflow name 'same' is already used by {root}/a.yaml"
        " (give each workflow a unique name)"
    ]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THUMBS_SECRET", "s3cr3t-thumbs")
    monkeypatch.setenv("NOTIFY_SECRET", "s3cr3t-notify")


@pytest.fixture
def catalog(env: None) -> Catalog:
    return load_dir(SPECS / "good")


def test_good_dir_loads_into_a_read_only_catalog(catalog: Catalog) -> None:
    # hook-schema.yaml is a webhook schema, not a workflow: it is not loaded as one.
    assert sorted(catalog) == ["kitchen-sink_2", "thumbnails"]
    assert isinstance(catalog["thumbnails"], Workflow)
    with pytest.raises(TypeError):
        catalog["x"] = catalog["thumbnails"]  # type: ignore[index]


def test_design_example_loads_to_the_right_dataclasses(catalog: Catalog) -> None:
    wf = catalog["thumbnails"]
    assert wf.file == SPECS / "good" / "thumbnails.yaml" and wf.dir == SPECS / "good"
    files, schedule, webhook, event = wf.triggers
    assert files == FileTrigger(
        name="files-1", path=SPECS / "good" / "inbox", events=("created",), suffix=".jpg", after="move:done"
    )
    assert schedule == ScheduleTrigger(
        name="schedule-1", expression="cron(0 2 * * ? *)", timezone="Europe/Berlin", catchup="latest"
    )
    assert isinstance(webhook, WebhookTrigger) and webhook.name == "upload" and webhook.auth == "hmac"
    assert webhook.secret == "s3cr3t-thumbs" and webhook.max_body_bytes == 1024**2
    assert isinstance(event, EventTrigger) and event.name == "event-1"
    assert event.compiled.matches(
        {
            "source": "sluice.run",
            "detail-type": "Run State Change",
            "detail": {"workflow": "ingest", "status": "SUCCEEDED"},
        }
    )
    assert wf.params["size"].type == "integer" and wf.params["size"].default == 128
    probe, resize = wf.steps["probe"], wf.steps["resize"]
    assert (probe.kind, probe.function, probe.timeout_s, probe.memory_bytes) == (
        "function",
        "images:probe",
        30.0,
        256 * 1024**2,
    )
    assert (
        resize.kind == "container"
        and resize.needs == ("probe",)
        and resize.array == 4
        and resize.timeout_s == 600.0
    )
    assert isinstance(resize.container, ContainerSpec) and resize.container.memory_bytes == 512 * 1024**2
    assert resize.retry.attempts == 3
    assert resize.retry.evaluate_on_exit == (
        ExitRule("retry", on_exit_code="137"),
        ExitRule("exit", on_reason="*"),
    )
    assert wf.dag.order == ("probe", "resize")
    assert wf.notify[0].on == ("SUCCEEDED", "FAILED") and wf.notify[0].secret == "s3cr3t-notify"


def test_rendering_the_example_templates(catalog: Catalog) -> None:
    resize = catalog["thumbnails"].steps["resize"]
    ctx = {"params": {"size": 128}, "steps": {"probe": {"output": {"width": 640, "key": "k.jpg"}}}}
    assert resize.when is not None and resize.when.render(ctx) is True
    assert resize.container is not None
    assert [c.render(ctx) for c in resize.container.command or ()] == [
        "sh",
        "-c",
        'echo "resizing $KEY at $SIZE"',
    ]
    assert {k: v.render(ctx) for k, v in resize.container.env.items()} == {"KEY": "k.jpg", "SIZE": 128}


def test_secrets_never_appear_in_reprs(catalog: Catalog) -> None:
    wf = catalog["thumbnails"]
    assert "s3cr3t" not in repr(wf)
    assert "s3cr3t" not in repr(wf.triggers) + repr(wf.notify)


def test_a_secret_from_the_environment_is_masked_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_TEST_SECRET", "hunter2")
    (tmp_path / "w.yaml").write_text("name: w\nsteps:\n  a: {wait: '${env:SLUICE_TEST_SECRET}'}\n")
    (line,) = [str(e) for e in validate(tmp_path)]
    assert "hunter2" not in line and "got a value from the environment" in line


def test_kitchen_sink_fields(catalog: Catalog) -> None:
    wf = catalog["kitchen-sink_2"]
    hook, open_hook, schedule = wf.triggers
    assert (hook.name, hook.auth, hook.max_body_bytes, hook.tolerance_s) == ("hook", "token", 64 * 1024, 60.0)
    assert hook.schema == {"type": "object", "required": ["user"], "properties": {"user": {"type": "string"}}}
    assert hook.input is not None and hook.input.render({"event": {"detail": {"body": {"user": "ann"}}}}) == {
        "who": "ann"
    }
    assert (open_hook.name, open_hook.auth) == ("open", "none")
    assert isinstance(schedule, ScheduleTrigger)
    assert (schedule.catchup, schedule.catchup_window_s, schedule.max_catchup) == ("all", 86400.0, 3)
    assert wf.params["names"].type == "array" and wf.params["names"].required
    assert not wf.params["retries"].required and wf.params["retries"].description == "how many"
    steps = wf.steps
    assert steps["list"].retry.errors == ("Timeout",) and steps["list"].retry.max_delay_s == 60.0
    assert steps["list"].retry.jitter == "none" and steps["list"].concurrency == 2
    assert steps["each"].for_each is not None and steps["each"].on_failure == "continue"
    assert steps["each"].function == "pkg:helper" and steps["dump"].function == "json:dumps"
    assert steps["pause"].wait is not None and steps["pause"].wait.seconds == 90.0
    assert steps["until"].wait is not None and steps["until"].wait.until is not None
    stop = steps["stop"]
    assert isinstance(stop, StepSpec) and stop.kind == "fail" and stop.fail is not None
    assert stop.fail.error == "ItemsFailed"
    assert wf.outputs is not None
    assert wf.outputs.render(
        {"params": {"label": "L"}, "steps": {"list": {"output": {"files": [1, 2]}}}}
    ) == {
        "count": 2,
        "label": "L",
    }
    assert wf.dag.next_actions({"list": "SUCCEEDED", "each": "FAILED"}) == (["dump", "pause", "until"], {})


def test_a_container_step_fans_out_with_for_each(tmp_path: Path) -> None:
    """As DESIGN's example has it: a container's for_each reads item and index in its env."""
    (tmp_path / "w.yaml").write_text(
        "name: w\nsteps:\n  tiles: {function: 'json:dumps'}\n"
        "  cut:\n    needs: [tiles]\n    for_each: '{{ steps.tiles.output }}'\n"
        "    container: {image: busybox:1.36, command: [sh, -c, 'echo \"$T\"', sh, '{{ item }}'],"
        " env: {T: '{{ item.t }}', I: '{{ index }}'}}\n"
    )
    cut = load_file(tmp_path / "w.yaml").steps["cut"]
    assert cut.kind == "container" and cut.for_each is not None and cut.container is not None
    assert cut.container.env["T"].render({"item": {"t": "a b"}}) == "a b"
    assert cut.container.env["I"].render({"index": 3}) == 3


def test_a_container_for_each_over_more_than_an_array_holds_is_refused_at_load(tmp_path: Path) -> None:
    items = json.dumps(list(range(10_001)))
    (tmp_path / "w.yaml").write_text(
        f"name: w\nsteps:\n  cut:\n    for_each: {items}\n    container: {{image: busybox:1.36}}\n"
    )
    (line,) = [str(e).split(": ", 1)[1] for e in validate(tmp_path)]
    assert line == (
        "steps.cut.for_each: a container step's for_each is one array job of at most 10000 children,"
        " got 10001 items (split the list over several steps)"
    )


def test_function_check_does_not_import_user_code(catalog: Catalog) -> None:
    # images.py raises at import: loading succeeded, so it was parsed, not imported.
    assert catalog["thumbnails"].steps["probe"].function == "images:probe"


def test_validate_lists_every_problem_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "many.yaml").write_text(
        "name: many\nsteps:\n  a: {function: nope:x, timeout: 1 hour, retry: {attempts: 0}}\n"
        "  b: {needs: [zz], container: {image: busybox, command: ls}}\n"
    )
    paths = [e.path for e in validate(tmp_path)]
    assert paths == [
        "steps.a.function",
        "steps.a.timeout",
        "steps.a.retry.attempts",
        "steps.b.container.command",
        "steps.b.needs",
    ]


@pytest.fixture
def typed() -> Workflow:
    return load_file(SPECS / "good" / "kitchen.yml")


def test_resolve_input_applies_defaults_and_keeps_given_values(typed: Workflow) -> None:
    given = {"names": ["a"], "label": "x", "retries": 2}
    assert resolve_input(typed, given) == {"names": ["a"], "label": "x", "retries": 2, "ratio": 0.5}
    assert resolve_input(typed, {"names": [], "label": "x", "ratio": 1})["ratio"] == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"label": "x"}, "param names is required (array)"),
        ({"names": [], "label": "x", "retries": True}, "param retries must be integer, got bool"),
        ({"names": [], "label": "x", "ratio": "1"}, "param ratio must be number, got str"),
        ({"names": "a", "label": "x"}, "param names must be array, got str"),
        ({"names": [], "label": "x", "lable": 1}, "unknown param 'lable' (did you mean label?)"),
    ],
)
def test_resolve_input_refuses_bad_input_naming_the_param(typed: Workflow, data: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        resolve_input(typed, data)
    assert message in str(info.value) and str(info.value).startswith("kitchen-sink_2: ")


def test_resolve_input_default_is_a_copy(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(
        "name: w\nparams: {tags: {type: array, default: [a]}}\nsteps: {s: {wait: 1s}}\n"
    )
    wf = load_file(tmp_path / "w.yaml")
    resolve_input(wf, {})["tags"].append("b")
    assert resolve_input(wf, None) == {"tags": ["a"]}
    assert json.dumps(resolve_input(wf, {}))


def test_a_list_with_a_wrong_item_says_which(tmp_path: Path) -> None:
    text = (
        "name: v\nsteps:\n  c:\n    container:\n      image: busybox:1.36\n      command: [true]\n"
        "      volumes: [./a:/a, {host: /etc, container: /data}]\n"
    )
    path = tmp_path / "v.yaml"
    path.write_text(text)
    with pytest.raises(SpecErrors) as info:
        load_file(path)
    assert "steps.c.container.volumes: must be a list of strings, but item 1 is a mapping" in str(info.value)


def test_a_mapping_with_a_wrong_value_says_which(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(
        "name: v\nsteps:\n  c:\n    container: {image: busybox:1.36, parameters: {who: [a, b]}}\n"
    )
    with pytest.raises(SpecErrors) as info:
        load_file(path)
    assert "steps.c.container.parameters: must be a mapping of names to strings, but who is a list" in str(
        info.value
    )


def test_a_key_written_twice_is_refused_not_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("name: twice\nsteps:\n  x: {wait: 1s}\n  y: {wait: 2s}\n  x: {wait: 3s}\n")
    with pytest.raises(SpecErrors) as info:
        load_file(path)
    assert str(info.value).endswith(
        "twice.yaml: line 5: invalid YAML: while reading a mapping, 'x' is written twice (first on line 3)"
        " (keep one of them)"
    )
    merged = tmp_path / "merged.yaml"  # a merge key's values may be overridden: that is no duplicate
    merged.write_text("name: m\nsteps:\n  x: &d {wait: 1s}\n  y: {<<: *d, wait: 2s, needs: [x]}\n")
    assert load_file(merged).steps["y"].wait is not None


def test_a_field_named_as_other_tools_name_it_gets_sluices_name(tmp_path: Path) -> None:
    path = tmp_path / "gha.yaml"
    path.write_text("name: gha\non: [push]\nsteps:\n  x: {wait: 1s, depends_on: [y]}\n  y: {wait: 1s}\n")
    with pytest.raises(SpecErrors) as info:
        load_file(path)
    assert "gha.yaml: on: unknown field (did you mean triggers?)" in str(info.value)
    assert "steps.x.depends_on: unknown field (did you mean needs?)" in str(info.value)
