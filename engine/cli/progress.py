"""A run's progress as one scannable line per state change (arq's glyph style).

One printer serves ``sluice run`` (fed by the orchestrator's progress callbacks, in process) and
``sluice runs show ID --follow`` (fed from the API by :class:`RunFollower`), so both views read the
same. What a handler prints is shown under its step, prefixed by the step's name, as Prefect
shows a flow's logs; function logs are written when an attempt ends, so that is when they appear.
A fan-out's items are counted (``work 37/120``) at most every ``COUNT_EVERY_S``, not line by line.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from engine.cli.common import is_terminal
from workflows.secrets import hide

GLYPHS = {
    "RUNNING": "→",
    "WAITING": "…",
    "SUCCEEDED": "✓",
    "FAILED": "✗",
    "SKIPPED": "↷",
    "CANCELLED": "⊘",
}
#: handler lines shown per attempt; the rest is in the attempt's log (the line says where)
LINES_PER_ATTEMPT = 20
#: fan-out items whose output is shown per step (the others' is only in their logs)
ITEMS_SHOWN = 3
#: a fan-out's ``done/total`` line at most this often (and once more when it ends)
COUNT_EVERY_S = 1.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED")
#: how often ``runs show --follow`` asks the server
FOLLOW_POLL_S = 0.25


class RunLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def workflow(self) -> str: ...


class Live(Protocol):
    """A terminal's view (engine/cli/terminal.py): lines above, the running steps below."""

    def line(self, elapsed: str, text: str) -> None: ...

    def running(self, steps: dict[str, str]) -> None: ...

    def close(self) -> None: ...


def live_view(stream: TextIO) -> Live | None:
    """rich's live view when ``stream`` is a terminal (not ``NO_COLOR``/``TERM=dumb``), else None."""
    if not is_terminal(stream):
        return None
    from engine.cli.terminal import LiveView  # rich is imported only for a terminal

    return LiveView(stream)


class ProgressPrinter:
    """Prints ``  0.12s ✓ fetch  0.01s`` lines for one run (or every run, when ``run_id`` is None).

    With a ``live`` view (a terminal) the lines are coloured and a footer names the steps running
    now, with their fan-out counts; the count lines then come only at a fan-out's end."""

    def __init__(self, out: TextIO = sys.stderr, run_id: str | None = None, live: Live | None = None) -> None:
        self.out = out
        self.run_id = run_id
        self.live = live
        self.t0 = time.monotonic()
        self.width = 12
        self.running: dict[str, str] = {}  #: step -> its count, for the live footer
        self._counted: dict[str, float] = {}  #: step -> when its items were last counted
        self._items_shown: dict[str, int] = {}  #: step -> items whose output was printed

    def __call__(self, kind: str, run: RunLike, step: str | None, status: str, info: dict[str, Any]) -> None:
        if self.run_id is not None and run.id != self.run_id:
            return
        if kind == "item":
            self._item(step or "", status, info)
        else:
            if info.get("log_path") and kind in ("step", "retry"):
                self._log_file(step or "", info["log_path"], info.get("index"))
            line = self._line(kind, run, step, status, info)
            if line:
                self.write(line)
            if kind == "step" and status == "FAILED":
                self.where(info.get("error"), info.get("log_path"))
            self._track(kind, step, status, info)
        if self.live is not None:
            self.live.running(self.running)

    def _track(self, kind: str, step: str | None, status: str, info: dict[str, Any]) -> None:
        if kind == "run" and status in TERMINAL:
            self.running.clear()
        elif kind == "step" and step is not None:
            if status == "RUNNING":
                self.running[step] = f"0/{info['items']}" if "items" in info else ""
            else:
                self.running.pop(step, None)

    def close(self) -> None:
        if self.live is not None:
            self.live.close()

    def write(self, line: str) -> None:
        elapsed = f"{time.monotonic() - self.t0:6.2f}s"
        if self.live is not None:
            self.live.line(elapsed, hide(line))
            return
        self.out.write(hide(f"{elapsed} {line}\n"))  # an error message may quote a secret
        self.out.flush()

    def handler_output(self, label: str, text: str, log_path: str | None = None) -> None:
        """``text`` a handler printed, each line as ``  label │ line`` (at most LINES_PER_ATTEMPT)."""
        lines = text.splitlines()
        for line in lines[:LINES_PER_ATTEMPT]:
            self.write(f"  {label.ljust(self.width)} │ {line}")
        if len(lines) > LINES_PER_ATTEMPT:
            where = f" in {_shown_path(log_path)}" if log_path else " (sluice logs RUN --step STEP)"
            self.write(f"  {label.ljust(self.width)} │ … {len(lines) - LINES_PER_ATTEMPT} more lines{where}")

    def _log_file(self, step: str, log_path: str, index: int | None) -> bool:
        """The attempt's output under its step; False when it printed nothing."""
        try:
            text = Path(log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:  # nothing printed: no log file is written
            return False
        if text:
            label = step if index is None or index < 0 else f"{step}[{index}]"
            self.handler_output(label, text, log_path)
        return bool(text)

    def _item(self, step: str, status: str, info: dict[str, Any]) -> None:
        done, total = int(info.get("done", 0)), int(info.get("items", 0))
        shown = self._items_shown.get(step, 0)
        if (
            info.get("log_path")
            and shown < ITEMS_SHOWN
            and self._log_file(step, info["log_path"], info.get("index"))
        ):
            self._items_shown[step] = shown + 1
        if status == "FAILED":
            self.write(f"✗ {(step + '[' + str(info.get('index')) + ']').ljust(self.width)} "
                       f"failed: {_error_text(info.get('error'))}")  # fmt: skip
        if step in self.running:
            self.running[step] = f"{done}/{total}"
        now = time.monotonic()
        if done == total or (self.live is None and now - self._counted.get(step, 0.0) >= COUNT_EVERY_S):
            self._counted[step] = now
            self.write(f"⋯ {step.ljust(self.width)} {done}/{total}")

    def where(self, error: dict[str, Any] | None, log_path: str | None) -> None:
        """Where the user's code failed (its last frame) and the log with the rest."""
        place = _last_frame(error)
        if place:
            self.write(f"  {' ' * self.width} at {place}")
        if log_path and Path(log_path).exists():
            self.write(f"  {' ' * self.width} log: {_shown_path(log_path)}")

    def _line(self, kind: str, run: RunLike, step: str | None, status: str, info: dict[str, Any]) -> str:
        glyph = GLYPHS.get(status, "·")
        if kind == "run":
            if status == "RUNNING":
                return f"{glyph} run {run.id} of {run.workflow} started"
            tail = f" in {info['duration_s']:.2f}s" if info.get("duration_s") is not None else ""
            reason = f": {info['reason']}" if info.get("reason") else ""
            if status != "SUCCEEDED" and not reason and info.get("error"):
                reason = f": {_error_text(info['error'])}"
            return f"{glyph} run {run.id} {status}{tail}{reason}"
        name = (step or "").ljust(self.width)
        if kind == "retry":
            index = info.get("index")
            if index is not None and index >= 0:
                name = f"{step}[{index}]".ljust(self.width)
            return (
                f"↻ {name} attempt {info['attempt']} failed ({_error_text(info.get('error'))}); "
                f"retrying in {info['delay_s']:.2f}s"
            )
        if status == "RUNNING":
            extra = f" ({info['items']} items)" if "items" in info else ""
            if info.get("attempt", 1) > 1:
                extra = f" (attempt {info['attempt']})"
            if (info.get("waited_s") or 0) >= 0.05:  # a shorter wait is the dispatch itself, not news
                extra += f" after waiting {info['waited_s']:.2f}s"  # for a worker, or its concurrency key
            return f"{glyph} {name} started{extra}"
        if status == "WAITING":
            return f"{glyph} {name} {info.get('reason') or 'waiting for a function worker'}"
        if status == "SKIPPED":
            return f"{glyph} {name} skipped: {info.get('reason')}"
        if status == "FAILED":
            return f"{glyph} {name} failed: {_error_text(info.get('error'))}"
        if status == "CANCELLED":
            return f"{glyph} {name} cancelled"
        duration = info.get("duration_s")
        return f"{glyph} {name} {'' if not duration else f'{duration:.2f}s'}".rstrip()


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def _last_frame(error: dict[str, Any] | None) -> str | None:
    """``handlers.py:7 in total`` from a Lambda-shaped ``stackTrace`` (the user's frames only)."""
    trace = (error or {}).get("stackTrace") or []
    for entry in reversed(trace if isinstance(trace, list) else []):
        found = _FRAME.search(str(entry))
        if found:
            return f"{_shown_path(found['file'])}:{found['line']} in {found['func']}"
    return None


def _shown_path(path: str) -> str:
    """Relative to the working directory when it is below it (what a user can open), else whole."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    message = str(error.get("errorMessage", "")).strip().splitlines()
    return f"{error.get('errorType')}: {message[0] if message else ''}"


def render_outputs(outputs: Any) -> str:
    return json.dumps(outputs, indent=2, ensure_ascii=False, sort_keys=False)


class RemoteRun:
    """What the printer needs of a run, from an API answer."""

    def __init__(self, run_id: str, workflow: str) -> None:
        self.id, self.workflow = run_id, workflow


_HEADER = re.compile(r"^==> (?P<label>\S+) attempt (?P<attempt>\d+) <==$")


class RunFollower:
    """Turns successive API answers for one run (and its log text) into the printer's calls.

    ``sluice runs show ID --follow`` polls ``GET /api/v1/runs/ID`` and ``/logs?after=``; each
    answer is compared with the last one seen, so a step that started and ended between two
    polls still prints both lines, in order, with what it printed between them."""

    def __init__(self, printer: ProgressPrinter) -> None:
        self.printer = printer
        self.seen: dict[str, tuple[str, int]] = {}  #: step -> (status, attempts) last printed
        self.run_status: str | None = None
        self._label = "?"
        self._partial = ""

    def update(self, run: dict[str, Any], log_text: str) -> bool:
        """Print what changed, step by step in the order they started; True once the run has ended."""
        call, ref = self.printer, RemoteRun(run["run_id"], run["workflow"])
        if self.run_status is None:
            call("run", ref, None, "RUNNING", {})
            self.run_status = "RUNNING"
        printed: dict[str, list[tuple[str, str]]] = {}
        for label, line in self._lines(log_text):
            printed.setdefault(label.partition("[")[0], []).append((label, line))
        steps: dict[str, dict[str, Any]] = run.get("steps") or {}
        for name, step in steps.items():
            self._step(ref, name, step, printed.pop(name, []))
        for lines in printed.values():  # output of a step the answer did not list yet: next time
            for label, line in lines:
                self.printer.handler_output(label, line)
        if run["status"] in TERMINAL:
            info = {"duration_s": _took(run), "reason": run.get("reason"), "error": run.get("error")}
            call("run", ref, None, run["status"], info)
            return True
        return False

    def _step(self, ref: RemoteRun, name: str, step: dict[str, Any], lines: list[tuple[str, str]]) -> None:
        status, attempts = step["status"], int(step.get("attempts") or 0)
        if status == "WAITING" and self.seen.get(name, ("", 0))[0] != "WAITING":  # as `sluice run` says
            self.seen[name] = ("WAITING", max(attempts, 1))
            self.printer("step", ref, name, "WAITING", {"attempt": attempts, "reason": step.get("reason")})
        elif name not in self.seen:
            self.seen[name] = ("RUNNING", max(attempts, 1))
            info: dict[str, Any] = {"attempt": max(attempts, 1)}
            if step.get("items") is not None:
                info = {"items": step["items"]}
            if status != "SKIPPED":
                self.printer("step", ref, name, "RUNNING", info)
        elif status != "WAITING" and (
            self.seen[name][0] == "WAITING" or (status == "RUNNING" and attempts > self.seen[name][1])
        ):
            self.seen[name] = ("RUNNING", attempts)
            self.printer("step", ref, name, "RUNNING", {"attempt": attempts})
        for label, line in lines:
            self.printer.handler_output(label, line)
        if status in TERMINAL and self.seen[name][0] not in TERMINAL:
            self.seen[name] = (status, self.seen[name][1])
            info = {"duration_s": _took(step), "error": step.get("error"), "reason": step.get("reason")}
            self.printer("step", ref, name, status, info)

    def _lines(self, text: str) -> list[tuple[str, str]]:
        """``(label, line)`` from log text in the API's format (``==> step[i] attempt N <==`` heads)."""
        out: list[tuple[str, str]] = []
        if not text:
            return out
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()  # the last line may still be being written
        for line in lines:
            head = _HEADER.match(line)
            if head:
                self._label = head["label"].removesuffix("[]")
            elif line:
                out.append((self._label, line))
        return out


def _took(record: dict[str, Any]) -> float | None:
    started, ended = record.get("started_at"), record.get("ended_at")
    return None if started is None or ended is None else float(ended) - float(started)
