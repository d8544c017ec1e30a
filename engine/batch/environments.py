"""What a compute environment connects to, checked when it is written: Docker (local, ``unix://``,
``tcp://`` with or without TLS, ``ssh://``), Podman (its service's socket) or Slurm.

Nothing here does I/O beyond checking that named certificate files exist; the result is the
``(type, endpoint, config)`` the store keeps and the attempts build their runner from.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.batch.jobs import JobError
from engine.batch.queues import Environment
from engine.executors.docker_api import TlsFiles
from engine.executors.docker_ssh import SshOptions
from engine.executors.slurm import SlurmConfig

TYPES = ("docker", "podman", "slurm")
TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")
SSH_KEYS = ("ssh_identity", "ssh_known_hosts")


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
    endpoint = str(body.get("endpoint", old.endpoint if old else "local"))
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
    config = dict(old.config) if old is not None else {}
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
            raise JobError(f"{key}: an absolute path to a PEM file on this machine, got {path!r}")
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
