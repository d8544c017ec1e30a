"""The Slurm commands Sluice needs, over ``slurmrestd`` instead of the client commands.

For an engine that is not a Slurm submit host (no ``slurm.conf``, no munge key) where the site
runs ``slurmrestd``: ``rest_url`` in the environment's ``slurm:`` settings. Only three calls are
used, of the ``openapi/v0.0.38`` plugin (Slurm 22.05; later releases keep it beside newer ones):

* ``POST /slurm/v0.0.38/job/submit``: the same job ``sbatch_argv`` describes, as JSON (name,
  comment, output, working directory, CPUs, memory, time limit, array, partition, account, QOS,
  ``requeue: false``); the batch script's text as ``script``. The attempt's folder goes to the
  script as ``SLUICE_ATTEMPT_FOLDER`` in the job's environment (this API passes no arguments).
* ``GET /slurm/v0.0.38/jobs``: the same records ``squeue --json`` prints, read by
  :func:`~engine.executors.slurm_squeue.parse_squeue_json`.
* ``DELETE /slurm/v0.0.38/job/{id}``: ``scancel`` (``A_i`` for one array task).

Auth: ``unix:/path`` is ``slurmrestd -a rest_auth/local`` on a socket, which trusts the peer's
uid (the engine's user). ``http(s)://host:port`` is JWT auth: ``X-SLURM-USER-NAME`` (the
engine's user, or ``rest_user``) and ``X-SLURM-USER-TOKEN`` from ``$SLURM_JWT`` in the engine's
environment (``scontrol token lifespan=…`` makes one where ``AuthAltTypes=auth/jwt``). The token
is read at each call, so a renewed one is used without a restart, and never logged.
"""

from __future__ import annotations

import getpass
import json
import math
import os
from pathlib import Path
from typing import Any

import aiohttp

from engine.executors.slurm_squeue import SlurmError

API = "/slurm/v0.0.38"
_TIMEOUT = aiohttp.ClientTimeout(total=30.0)


def check_url(url: object) -> str:
    """``rest_url`` as written; ValueError says what to write."""
    if isinstance(url, str) and (
        (url.startswith("unix:/") and len(url) > 6) or url.startswith(("http://", "https://"))
    ):
        return url
    raise ValueError(
        "slurm.rest_url: where slurmrestd listens: unix:/path/to/slurmrestd.sock (rest_auth/local) "
        f"or http://HOST:PORT (JWT auth, the token in $SLURM_JWT), got {url!r}"
    )


def job_body(argv: list[str]) -> dict[str, Any]:
    """``sbatch_argv``'s command line -> the ``job/submit`` body (the script's text included)."""
    flags = dict(a[2:].split("=", 1) for a in argv[1:-2] if a.startswith("--") and "=" in a)
    job: dict[str, Any] = {
        "name": flags["job-name"],
        "comment": flags["comment"],
        "standard_output": flags["output"],
        "current_working_directory": flags["chdir"],
        "cpus_per_task": int(flags["cpus-per-task"]),
        "memory_per_node": int(flags["mem"].rstrip("M")),
        "requeue": "--no-requeue" not in argv,
        "environment": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLUICE_ATTEMPT_FOLDER": argv[-1]},
    }
    for flag in ("partition", "account", "qos", "array"):
        if flag in flags:
            job[flag] = flags[flag]
    if "time" in flags:
        minutes, _, seconds = flags["time"].partition(":")
        job["time_limit"] = int(minutes) + math.ceil(int(seconds or 0) / 60)
    return {"job": job, "script": Path(argv[-2]).read_text()}


class RestCommands:
    """``sbatch``, ``squeue --json`` and ``scancel`` as slurmrestd calls; one session per environment."""

    def __init__(self, url: str, user: str | None = None) -> None:
        self.url, self.user = url, user
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<RestCommands {self.url}>"

    def _open(self) -> tuple[aiohttp.ClientSession, str]:
        unix = self.url.startswith("unix:")
        if self._session is None or self._session.closed:
            connector = aiohttp.UnixConnector(path=self.url[5:]) if unix else aiohttp.TCPConnector()
            self._session = aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT)
        return self._session, ("http://slurmrestd" if unix else self.url.rstrip("/"))

    def _headers(self) -> dict[str, str]:
        if self.url.startswith("unix:"):
            return {}
        token = os.environ.get("SLURM_JWT")
        if not token:
            raise SlurmError(
                f"slurmrestd at {self.url} needs a JWT: set SLURM_JWT in the engine's environment "
                "(`scontrol token lifespan=86400` prints one)"
            )
        return {"X-SLURM-USER-NAME": self.user or getpass.getuser(), "X-SLURM-USER-TOKEN": token}

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        session, base = self._open()
        try:
            async with session.request(method, base + API + path, json=body, headers=self._headers()) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SlurmError(f"slurmrestd at {self.url} did not answer: {exc or type(exc).__name__}") from exc
        if resp.status in (401, 403):  # whatever the body (slurmrestd's is not always JSON)
            raise SlurmError(f"slurmrestd at {self.url} refused our credentials ({resp.status})")
        try:
            return dict(json.loads(text))
        except ValueError:
            why = f"slurmrestd at {self.url} answered {resp.status}: {text.strip()[:200]}"
            raise SlurmError(why) from None

    @staticmethod
    def _errors(data: dict[str, Any]) -> str:
        return "; ".join(str(e.get("error") or e.get("description") or e) for e in data.get("errors") or [])

    async def sbatch(self, argv: list[str]) -> tuple[int, str, str]:
        data = await self._call("POST", "/job/submit", job_body(argv))
        errors = self._errors(data)
        if errors or not data.get("job_id"):
            return 1, "", errors or "slurmrestd gave no job id"
        return 0, str(data["job_id"]), ""

    async def squeue(self) -> tuple[int, str, str]:
        data = await self._call("GET", "/jobs")
        errors = self._errors(data)
        return (1, "", errors) if errors else (0, json.dumps({"jobs": data.get("jobs", [])}), "")

    async def scancel(self, handle: str) -> tuple[int, str, str]:
        errors = self._errors(await self._call("DELETE", f"/job/{handle}"))
        return (1, "", errors) if errors else (0, "", "")

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
