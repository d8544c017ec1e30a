"""What a compute environment connects to, checked when it is written: Docker (local, ``unix://``,
``tcp://`` with or without TLS, ``ssh://``), Podman (its service's socket) or Slurm.

Nothing here does I/O beyond checking that named certificate files exist; the result is the
``(type, endpoint, config)`` the store keeps and the attempts build their runner from.

A Docker environment may list several daemons instead of one endpoint (``hosts:``, each with
its endpoint, size and TLS or SSH settings); its endpoint is then :data:`HOSTS`, and
engine/batch/hosts.py decides which of them are in service.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.batch.jobs import JobError
from engine.batch.queues import Environment
from engine.executors.docker_api import TlsFiles
from engine.executors.docker_ssh import SshOptions
from engine.executors.slurm import SlurmConfig
from workflows.units import UnitError, parse_size

TYPES = ("docker", "podman", "slurm")
TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")
SSH_KEYS = ("ssh_identity", "ssh_known_hosts")
HOSTS = "hosts"  #: the endpoint of an environment that lists several Docker hosts
MAX_HOSTS = 64
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST_KEYS = ("name", "endpoint", "vcpus", "memory", *TLS_KEYS, *SSH_KEYS, "insecure")


def settle(body: Mapping[str, Any], old: Environment | None) -> tuple[str, str, dict[str, Any]]:
    """``(type, endpoint, config)`` of an environment body (an update keeps what it leaves out)."""
    kind = body.get("type", old.type if old else "docker")
    if kind not in TYPES:
        raise JobError(f"type: one of {', '.join(TYPES)}, got {kind!r}")
    if old is not None and old.type != kind:
        raise JobError(f"type: environment {old.name} is {old.type}; make a new environment for {kind}")
    if kind == "slurm":
        return kind, "slurm", _slurm(body, old)
    if "slurm" in body:
        raise JobError("slurm: settings for a Slurm environment; add type: slurm, or leave slurm out")
    if body.get("hosts") is not None or (old is not None and old.hosts and "endpoint" not in body):
        return kind, HOSTS, {"hosts": _hosts(body, old, kind)}
    if old is not None and old.hosts and old.used_vcpus > 0:
        raise JobError(
            f"endpoint: environment {old.name} runs jobs on its hosts; change it once they have ended"
        )
    endpoint = str(body.get("endpoint", "local" if old is None or old.hosts else old.endpoint))
    if kind == "podman" and endpoint.startswith("ssh://"):
        raise JobError(
            "endpoint: a Podman environment is reached through its service's socket (local, "
            "unix:///path or tcp://HOST:PORT); for another machine, forward that socket "
            f"(ssh -L /tmp/podman.sock:/run/podman/podman.sock HOST) and name it here, got {endpoint!r}"
        )
    if kind == "podman" and any(body.get(k) for k in TLS_KEYS):
        raise JobError("tls_ca: podman system service serves no TLS; use its unix socket")
    if endpoint != "local" and not endpoint.startswith(("tcp://", "unix://", "ssh://")):
        raise JobError(
            "endpoint: write local, unix:///path, tcp://HOST:PORT or ssh://USER@HOST[:PORT], "
            f"got {endpoint!r}"
        )
    return kind, endpoint, _docker(body, old, endpoint)


def tls_files(config: Mapping[str, Any]) -> TlsFiles | None:
    if not all(config.get(k) for k in TLS_KEYS):
        return None
    return TlsFiles(str(config["tls_ca"]), str(config["tls_cert"]), str(config["tls_key"]))


def ssh_options(config: Mapping[str, Any]) -> SshOptions | None:
    if not any(config.get(k) for k in SSH_KEYS):
        return None
    return SshOptions(config.get("ssh_identity"), config.get("ssh_known_hosts"))


def _hosts(body: Mapping[str, Any], old: Environment | None, kind: str) -> list[dict[str, Any]]:
    """``hosts: [{endpoint, vcpus, memory, name?, tls_*?, ssh_*?}, ...]`` (an update may leave it out)."""
    if kind != "docker":
        raise JobError(f"hosts: several hosts are for type docker, and this environment is {kind}")
    if "endpoint" in body:
        raise JobError("endpoint: give either one endpoint or a list of hosts, not both")
    given = [k for k in (*TLS_KEYS, *SSH_KEYS, "insecure") if k in body]
    if given:
        raise JobError(f"{given[0]}: with hosts, give TLS and SSH settings in each host's entry")
    raw = body.get("hosts")
    if raw is None and old is not None:
        return [h.spec() for h in old.hosts]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_HOSTS:
        raise JobError(
            f"hosts: a list of 1..{MAX_HOSTS} Docker hosts, e.g. "
            "[{endpoint: unix:///run/docker-b.sock, vcpus: 2, memory: 2GiB}], got " + repr(raw)[:80]
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        out.append(_host(item, f"hosts[{i}]", f"host-{i + 1}", out))
    if old is not None and old.used_vcpus > 0 and out != [h.spec() for h in old.hosts]:
        raise JobError(f"hosts: environment {old.name} runs jobs; change its hosts once they have ended")
    return out


def _host(item: Any, where: str, default_name: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise JobError(f"{where}: an object {{endpoint, vcpus, memory}}, got {item!r}")
    unknown = sorted(set(item) - set(_HOST_KEYS))
    if unknown:
        raise JobError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_HOST_KEYS)}")
    name = item.get("name", default_name)
    if not isinstance(name, str) or not _HOST_NAME.fullmatch(name):
        raise JobError(f"{where}.name: letters, digits, '_', '.', '-' (up to 64), got {name!r}")
    if any(h["name"] == name for h in seen):
        raise JobError(f"{where}.name: {name!r} is already the name of another host; names are unique")
    endpoint = item.get("endpoint")
    if not isinstance(endpoint, str) or not (
        endpoint == "local" or endpoint.startswith(("tcp://", "unix://", "ssh://"))
    ):
        raise JobError(
            f"{where}.endpoint: write local, unix:///path, tcp://HOST:PORT or ssh://USER@HOST[:PORT], "
            f"got {endpoint!r}"
        )
    if any(h["endpoint"] == endpoint for h in seen):
        raise JobError(f"{where}.endpoint: {endpoint} is listed twice; each host is one daemon")
    vcpus = item.get("vcpus")
    if isinstance(vcpus, bool) or not isinstance(vcpus, int | float) or vcpus <= 0:
        raise JobError(f"{where}.vcpus: a positive number (the vCPUs jobs may use there), got {vcpus!r}")
    try:
        memory = parse_size(item.get("memory"))
    except UnitError as exc:
        raise JobError(f"{where}.memory: {exc}") from None
    if memory <= 0:
        raise JobError(f"{where}.memory: more than 0 bytes, got {item.get('memory')!r}")
    try:
        extra = _docker(item, None, endpoint)
    except JobError as exc:
        raise JobError(f"{where}.{exc}") from None
    return {"name": name, "endpoint": endpoint, "vcpus": float(vcpus), "memory": memory, **extra}


def bounds(body: Mapping[str, Any], old: Environment | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """An environment with hosts: its max vCPUs and memory default to the hosts' sums, never more."""
    hosts = config.get("hosts")
    if not hosts:
        return dict(body)
    vcpus, memory = sum(h["vcpus"] for h in hosts), sum(h["memory"] for h in hosts)
    same = old is not None and "hosts" not in body
    out = dict(body)
    out.setdefault("max_vcpus", old.max_vcpus if same and old is not None else vcpus)
    out.setdefault("max_memory", old.max_memory if same and old is not None else memory)
    if isinstance(out["max_vcpus"], int | float) and out["max_vcpus"] > vcpus + 1e-9:
        raise JobError(f"max_vcpus: at most the hosts' {vcpus:g} vCPUs together, got {out['max_vcpus']!r}")
    if isinstance(out["max_memory"], int | float) and out["max_memory"] > memory:
        raise JobError(f"max_memory: at most the hosts' {memory} bytes together, got {out['max_memory']!r}")
    return out


def _slurm(body: Mapping[str, Any], old: Environment | None) -> dict[str, Any]:
    raw = body.get("slurm", old.config if old else None)
    if raw is None:
        raise JobError("slurm: a Slurm environment needs its settings, at least {shared_dir: /shared/path}")
    if old is not None and isinstance(raw, Mapping):
        raw = {**old.config, **raw}  # an update names only what changes
    try:
        return SlurmConfig.from_json(raw).to_json()
    except ValueError as exc:
        raise JobError(str(exc)) from None


def _docker(body: Mapping[str, Any], old: Environment | None, endpoint: str) -> dict[str, Any]:
    config = {k: v for k, v in old.config.items() if k != "hosts"} if old is not None else {}
    config.update({k: body[k] for k in (*TLS_KEYS, *SSH_KEYS, "insecure") if k in body})
    config = {k: v for k, v in config.items() if v is not None}
    given = [k for k in TLS_KEYS if config.get(k)]
    if given and len(given) < len(TLS_KEYS):
        missing = ", ".join(k for k in TLS_KEYS if k not in given)
        raise JobError(
            f"{missing}: give tls_ca, tls_cert and tls_key together (the daemon's --tlsverify files)"
        )
    for key in given:
        path = config[key]
        if not isinstance(path, str) or not path.startswith("/") or not Path(path).is_file():
            raise JobError(
                f"{key}: an absolute path to a PEM file on this machine, got {path!r}: {_not_pem(path)}"
            )
    if given and not endpoint.startswith("tcp://"):
        raise JobError(f"tls_ca: TLS is for a tcp:// endpoint, and this one is {endpoint}")
    for key in SSH_KEYS:
        path = config.get(key)
        if path is not None and (
            not isinstance(path, str) or not path.startswith("/") or not Path(path).is_file()
        ):
            raise JobError(f"{key}: an absolute path to a file on this machine, got {path!r}")
        if path is not None and not endpoint.startswith("ssh://"):
            raise JobError(f"{key}: for an ssh:// endpoint, and this one is {endpoint}")
    if endpoint.startswith("ssh://") and not urlsplit(endpoint).hostname:
        raise JobError(f"endpoint: write ssh://USER@HOST[:PORT], got {endpoint!r}")
    insecure = config.get("insecure", False)
    if not isinstance(insecure, bool):
        raise JobError(f"insecure: true or false, got {insecure!r}")
    if endpoint.startswith("tcp://") and not given and not insecure and not _loopback(endpoint):
        raise JobError(
            f"endpoint: {endpoint} is plain TCP to another machine: anyone who can reach it can run "
            "containers as root there. Give tls_ca, tls_cert and tls_key (the daemon runs with "
            "--tlsverify), or write insecure: true to accept that"
        )
    return config


def _loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _not_pem(path: object) -> str:
    return "no such file" if isinstance(path, str) and path.startswith("/") else "not an absolute path"
