"""The dashboard in a real browser: Debian's chromium driven by Playwright (no browser download).

Screenshots of the main pages go to tests/artifacts/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.api import notify as notify_api
from tests.support.engines import write_flow
from tests.support.http import Serve, Served
from tests.support.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: in CI a missing browser is a failure (.ci/run installs it); on a laptop without it, a skip
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium)",
)

FLOWS = {
    "greet.yaml": """
        name: greet
        description: Say hello, then shout it.
        triggers:
          - schedule: rate(1 day)
        params:
          who: {type: string, required: true, description: whom to greet}
          gate: {type: string, default: ""}
        steps:
          hello: {function: "handlers:hello", input: {who: "{{ params.who }}", gate: "{{ params.gate }}"}}
          shout: {function: "handlers:shout", needs: [hello], input: {text: "{{ steps.hello.output }}"}}
          count: {function: "handlers:shout", needs: [hello], input: {text: "n"}}
          done: {function: "handlers:shout", needs: [shout, count], input: {text: "ok"}}
        outputs: {greeting: "{{ steps.shout.output }}"}
        """,
    "sleepy.yaml": """
        name: sleepy
        steps:
          nap: {wait: 60s}
        """,
    "broken.yaml": """
        name: broken
        steps:
          ok: {function: "handlers:shout", input: {text: "kept"}}
          first: {function: "handlers:fail", needs: [ok]}
          after: {function: "handlers:shout", needs: [first], input: {text: "x"}}
        """,
}

HANDLERS = """
import os, time

def hello(event, context):
    print("greeting", event["who"], flush=True)
    deadline = time.monotonic() + 30
    while event["gate"] and not os.path.exists(event["gate"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    print("gate open", flush=True)
    return "hello " + event["who"]

def shout(event, context):
    return str(event["text"]).upper()

def fail(event, context):
    raise ValueError("the input was not what first expected")
"""


@pytest.fixture
async def served(serve: Serve, tmp_path: Path) -> Served:
    flows = tmp_path / "flows"
    for name, text in FLOWS.items():
        write_flow(flows, text, HANDLERS, name=name)
    return await serve(flows, groups=lambda engine: [notify_api.routes(engine.bus, None)])  # replay


@pytest.fixture
async def page(served: Served) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=20_000)  # two shared cores: a step may take seconds to start
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        tab = await context.new_page()
        tab.set_default_timeout(20_000)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield tab
        finally:
            await browser.close()
        assert not errors, f"the page's script failed: {errors}"


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


async def test_start_a_run_from_the_form_and_watch_it_finish_live(
    served: Served, page: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    await page.goto(served.url + "/")
    await expect(page.locator("h1")).to_have_text("Runs")
    await page.click("nav >> text=Workflows")
    form = page.locator("form.run-form[data-workflow=greet]")
    gate = tmp_path / "gate"
    await form.locator("input[name=who]").fill("Ada")
    await form.locator("input[name=gate]").fill(str(gate))
    await form.locator("button[type=submit]").click()
    await page.wait_for_url("**/runs/r-*")
    await page.evaluate("window.__noReload = true")  # gone if the page reloads
    await expect(page.locator("#run-status")).to_have_text("RUNNING")
    log = page.locator("pre[data-follow]").first  # the running step's log, followed while it runs
    await expect(log).to_contain_text("greeting Ada")
    await shot(page, "run-running")
    gate.touch()
    await expect(page.locator("#run-status")).to_have_text("SUCCEEDED")
    assert await page.evaluate("window.__noReload === true"), "the page reloaded instead of updating live"
    # the DAG: one box per step, laid out by levels, coloured by state
    nodes = page.locator("svg.dag a.node")
    await expect(nodes).to_have_count(4)
    statuses = await nodes.evaluate_all("ns => ns.map(n => [n.dataset.step, n.dataset.status])")
    assert sorted(statuses) == [[s, "SUCCEEDED"] for s in ("count", "done", "hello", "shout")]
    xs = {
        n: await page.locator(f"svg.dag a.node[data-step={n}] rect").get_attribute("x")
        for n in ("hello", "shout", "count", "done")
    }
    assert float(xs["hello"]) < float(xs["shout"]) == float(xs["count"]) < float(xs["done"])
    await expect(page.locator("pre.json").last).to_contain_text("HELLO ADA")
    await expect(page.locator("section.attempt[data-step=hello] pre.log")).to_contain_text("gate open")
    await shot(page, "run-dag")


async def test_the_runs_list_updates_live_and_filters(served: Served, page: Any) -> None:
    from playwright.async_api import expect

    await page.goto(served.url + "/")
    await page.evaluate("window.__noReload = true")
    await expect(page.locator("table.runs tbody")).to_contain_text("No runs yet")
    run = await served.engine.run_to_end("greet", {"who": "Bo"}, timeout_s=30)
    row = page.locator(f"tr[data-run={run['run_id']}]")
    await expect(row).to_contain_text("SUCCEEDED")
    await expect(page.locator("b[data-count=SUCCEEDED]")).to_have_text("1")
    assert await page.evaluate("window.__noReload === true")
    await shot(page, "runs")
    await page.select_option("select[name=status]", "FAILED")
    await page.click("form.filters button[type=submit]")
    await expect(page.locator("table.runs tbody")).to_contain_text("No runs yet")
    await page.fill("input[name=q]", "r-nope")
    await page.press("input[name=q]", "Enter")
    await expect(page.locator(".error-message")).to_have_text("no run r-nope")
    await expect(page.locator("main a")).to_have_attribute("href", "/")


async def test_cancel_a_run_and_retry_a_failed_one(served: Served, page: Any) -> None:
    from playwright.async_api import expect

    sleepy = await served.engine.start_run("sleepy", {})
    await page.goto(f"{served.url}/runs/{sleepy}")
    await expect(page.locator("#run-status")).to_have_text("RUNNING")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("button:has-text('Cancel')")
    await expect(page.locator("#run-status")).to_have_text("CANCELLED")

    broken = await served.engine.run_to_end("broken", timeout_s=30)
    await page.goto(f"{served.url}/runs/{broken['run_id']}")
    await expect(page.locator("#run-status")).to_have_text("FAILED")
    error = page.locator("section.attempt[data-step=first] pre.error")
    await expect(error).to_contain_text("ValueError: the input was not what first expected")
    assert "\\n" not in (await error.inner_text())  # a traceback as text, not an escaped string
    await shot(page, "run-failed")
    await page.click("button:has-text('Retry from the failed step')")
    await page.wait_for_url(lambda url: "/runs/r-" in url and broken["run_id"] not in url)
    await expect(page.locator("#run-status")).to_have_text("FAILED")
    kept = page.locator("tr[data-step=ok]")  # a redrive: what succeeded is kept, not run again
    await expect(kept).to_contain_text(f"kept from {broken['run_id']}")
    await expect(page.locator("section.attempt[data-step=ok]")).to_have_count(0)


async def test_run_again_with_the_same_input_and_the_other_pages(served: Served, page: Any) -> None:
    from playwright.async_api import expect

    first = await served.engine.run_to_end("greet", {"who": "Cy"}, timeout_s=30)
    await page.goto(f"{served.url}/runs/{first['run_id']}")
    await page.click("button:has-text('Run again')")
    await page.wait_for_url(lambda url: "/runs/r-" in url and first["run_id"] not in url)
    await expect(page.locator("#run-status")).to_have_text("SUCCEEDED")
    await expect(page.locator("pre.json").first).to_contain_text('"who": "Cy"')
    await page.goto(f"{served.url}/workflows")
    await expect(page.locator("#wf-greet")).to_contain_text("rate(1 day)")
    await expect(page.locator("#wf-greet")).to_contain_text("last run")
    await expect(page.locator("#wf-greet .last-run")).to_contain_text("started by sluice.manual")
    await expect(page.locator("#wf-greet .next-fire")).to_contain_text("next 20")  # rate(1 day): a date
    await shot(page, "workflows")
    await page.goto(f"{served.url}/events")
    await expect(page.locator("details.event").first).to_contain_text("greet")  # the run it started
    replay = page.locator("form.api-form")
    await replay.locator("input[name=since]").fill("1h")
    await replay.locator("button[type=submit]").click()  # a dry run: says what it would replay
    await expect(page.locator("pre.api-answer")).to_be_visible()
    await expect(page.locator("pre.api-answer")).to_contain_text("{")
    runs_before = await served.engine.store.read(
        lambda c: c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    )
    await shot(page, "events")
    runs_after = await served.engine.store.read(
        lambda c: c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    )
    assert runs_after == runs_before, "a dry run started runs"
    await page.goto(f"{served.url}/batch")
    await expect(page.locator("h1")).to_have_text("Batch")
    await page.goto(f"{served.url}/no/such/page")
    await expect(page.locator("h1")).to_have_text("Not found")
    body = json.loads(await (await page.request.get(f"{served.url}/api/v1/nope")).text())
    assert body["error"]["code"] == "not_found"  # the API still answers JSON
    assert os.listdir(ARTIFACTS)


async def test_pause_and_resume_a_trigger(served: Served, page: Any) -> None:
    from playwright.async_api import expect

    await page.goto(f"{served.url}/workflows")
    row = page.locator("tr.trigger[data-trigger='greet/schedule-1']")
    await expect(row).to_contain_text("active")
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("button:has-text('Pause')").click()
    await expect(row).to_contain_text("paused since")  # the page reloads with the stored state
    assert served.engine.pauses.is_paused("greet", "schedule-1")
    await shot(page, "workflows-paused")
    await row.locator("button:has-text('Resume')").click()
    await expect(row).to_contain_text("active")
    assert not served.engine.pauses.is_paused("greet", "schedule-1")
