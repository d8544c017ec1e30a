"""A small blocking client of the engine's HTTP API, standard library only.

It is two things at once: ``context.sluice`` inside a function handler (the worker loads this
file by path, so it must import nothing of ours: tests/contracts/test_layout.py checks), and the
synchronous facade :class:`engine.client.SluiceSync` for scripts outside the engine. The async
twin is :class:`engine.client.Sluice` (aiohttp); both speak the same routes with the same
method names and raise the same kind of error.

Waiting is polling (``GET`` the job or run until it ends), from 0.2 s doubling to 2 s: the
engine's API has no long-poll for jobs, and a function that waits pays a sleeping worker, not CPU.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

TYPE_CHECKING = False  # not importing typing keeps the worker's first use short
if TYPE_CHECKING:
    from typing import Any

JOB_DONE = ("SUCCEEDED", "FAILED")
RUN_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
FIRST_POLL_S = 0.2
MAX_POLL_S = 2.0


class SluiceError(Exception):
    """The engine refused a request (``status`` and ``code`` as its JSON error says) or could not
    be reached (``status`` 0, ``code`` ``unreachable``); ``message`` says what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        said = message if message.startswith(f"{code}:") else f"{code}: {message}"  # not "field: field:"
        super().__init__(f"{status} {said}" if status else message)
        self.status, self.code, self.message = status, code, message


class WaitTimeout(SluiceError, TimeoutError):
    """A wait ran past its ``timeout_s``; ``last`` is what the engine said last."""

    def __init__(self, what: str, timeout_s: float, last: dict[str, Any]) -> None:
        super().__init__(0, "timeout", f"{what} is still {last.get('status')} after {timeout_s:g}s")
        self.last = last


def submit_body(
    queue: str,
    definition: str | None,
    container: dict[str, Any] | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The ``POST /api/v1/jobs`` body; exactly one of ``definition`` and ``container``."""
    if (definition is None) == (container is None):
        raise ValueError("give a job definition name or a container ({'image': ..., 'command': [...]}), one")
    body: dict[str, Any] = {"queue": queue}
    if definition is not None:
        body["definition"] = definition
    else:
        body["container"] = container
    body.update({k: v for k, v in options.items() if v is not None})
    return body


def event_entry(source: str, detail_type: str, detail: dict[str, Any], resources: Any) -> dict[str, Any]:
    return {"Source": source, "DetailType": detail_type, "Detail": detail, "Resources": list(resources or ())}


def error_of(status: int, body: bytes, url: str) -> SluiceError:
    """The engine's ``{"error": {"code", "message"}}``, or a plain description of another answer."""
    try:
        err = json.loads(body)["error"]
        return SluiceError(status, str(err["code"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace")
        return SluiceError(status, "http_error", f"{url} answered {status}: {text}")


class Client:
    """The engine's API, blocking. ``token`` is sent as a bearer token and never shown."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the engine's URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        # no $HTTP_PROXY: the engine is next door, and a proxy would see the token (aiohttp's
        # client, engine.client.Sluice, ignores the proxy variables by default too)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<sluice client {self.url}>"  # never the token

    # -- plumbing --------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, text: bool = False) -> Any:
        """JSON in and out (``text``: the answer as text, for logs)."""
        url = self.url + path
        headers = {"Accept": "text/plain" if text else "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise error_of(exc.code, exc.read(), url) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SluiceError(0, "unreachable", f"cannot reach the engine at {self.url}: {reason}") from None
        if text:
            return raw.decode("utf-8", "replace")
        return json.loads(raw) if raw else None

    # -- jobs ------------------------------------------------------------------------------------

    def submit_job(
        self,
        queue: str = "default",
        *,
        definition: str | None = None,
        container: dict[str, Any] | None = None,
        name: str | None = None,
        array_size: int | None = None,
        parameters: dict[str, str] | None = None,
        depends_on: list[Any] | None = None,
        timeout_s: float | None = None,
        attempts: int | None = None,
        **more: Any,
    ) -> dict[str, Any]:
        """Submit a job (an array job with ``array_size``); answers ``{"job_id", "status", ...}``.

        ``more`` are other fields of ``POST /api/v1/jobs`` (``tags``, ``retry_strategy``,
        ``container_overrides``, ``scheduling_priority``), sent as given."""
        options = {"name": name, "array_size": array_size, "parameters": parameters,
                   "depends_on": depends_on, "timeout": timeout_s, "attempts": attempts, **more}  # fmt: skip
        return dict(self.request("POST", "/api/v1/jobs", submit_body(queue, definition, container, options)))

    def describe_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/jobs/" + urllib.parse.quote(job_id, safe=":")))

    def wait_job(self, job_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the job is SUCCEEDED or FAILED; answers its description (raises WaitTimeout)."""
        return self._wait(f"job {job_id}", lambda: self.describe_job(job_id), JOB_DONE, timeout_s)

    def job_logs(self, job_id: str, attempt: int | None = None) -> str:
        """What the job's attempt (default: its latest) printed, up to 1 MiB (an array child:
        ``"j-…:3"``)."""
        query = "" if attempt is None else f"?attempt={int(attempt)}"
        path = "/api/v1/jobs/" + urllib.parse.quote(job_id, safe=":") + "/logs" + query
        return str(self.request("GET", path, text=True))

    def cancel_job(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        path = "/api/v1/jobs/" + urllib.parse.quote(job_id, safe=":") + "/cancel"
        return dict(self.request("POST", path, {"reason": reason} if reason else {}))

    # -- events and runs -------------------------------------------------------------------------

    def put_event(
        self, source: str, detail_type: str, detail: dict[str, Any] | None = None, resources: Any = ()
    ) -> str:
        """Put one event on the engine's bus (EventBridge's PutEvents); answers its id."""
        entry = event_entry(source, detail_type, detail or {}, resources)
        answer = self.request("POST", "/api/v1/events", {"Entries": [entry]})["Entries"][0]
        if "ErrorCode" in answer:
            raise SluiceError(400, str(answer["ErrorCode"]), str(answer.get("ErrorMessage")))
        return str(answer["EventId"])

    def start_run(self, workflow: str, params: dict[str, Any] | None = None) -> str:
        """Start a run of ``workflow``; answers the run id."""
        path = "/api/v1/workflows/" + urllib.parse.quote(workflow, safe="") + "/runs"
        return str(self.request("POST", path, params or {})["run_id"])

    def describe_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/runs/" + urllib.parse.quote(run_id, safe="")))

    def wait_run(self, run_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the run ends; answers its summary (raises WaitTimeout)."""
        return self._wait(f"run {run_id}", lambda: self.describe_run(run_id), RUN_DONE, timeout_s)

    def run(self, workflow: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
            ) -> dict[str, Any]:  # fmt: skip
        """Start a run and wait for it to end."""
        return self.wait_run(self.start_run(workflow, params), timeout_s)

    def _wait(self, what: str, look: Any, done: tuple[str, ...], timeout_s: float | None) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pause = FIRST_POLL_S
        while True:
            last: dict[str, Any] = look()
            if last.get("status") in done:
                return last
            if deadline is not None and time.monotonic() + pause > deadline:
                raise WaitTimeout(what, timeout_s or 0.0, last)
            time.sleep(pause)
            pause = min(pause * 2, MAX_POLL_S)
