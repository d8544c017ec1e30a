"""The server config file (``$SLUICE_CONFIG``, YAML): global subscribers and retention.

Read once by ``sluice serve`` before anything starts, so a bad file stops the server with one
line naming the file and the setting, and changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workflows.sections import YamlLoader  # YAML 1.2 booleans: a bare ``on:`` stays the key "on"

SETTINGS = ("subscribers", "retention_days", "run_retention_days", "keep_runs_per_workflow", "allowed_hosts")


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and what to change."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    subscribers: list[dict[str, Any]] = field(default_factory=list)
    retention_days: float | None = None  #: None: SLUICE_RETENTION_DAYS, else the default
    run_retention_days: float | None = None  #: None: SLUICE_RUN_RETENTION_DAYS, else 90
    keep_runs_per_workflow: int | None = None  #: None: SLUICE_KEEP_RUNS, else no cap
    #: extra Host names the HTTP server answers to (engine/api/auth.py), e.g. sluice.example.com
    allowed_hosts: tuple[str, ...] = ()


def _days(value: Any) -> bool:
    """A number of days a person meant: finite, >= 0, not a boolean."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < 1e6


def load_config(path: str | os.PathLike[str] | None = None) -> ServerConfig:
    """The explicit path wins, then ``$SLUICE_CONFIG``; no file means the defaults."""
    path = path or os.environ.get("SLUICE_CONFIG")
    if not path:
        return ServerConfig()
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=YamlLoader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the server config: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the server config must be a mapping (write subscribers: [...])")
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (use {', '.join(SETTINGS)})")
    subscribers = data.get("subscribers") or []
    if not isinstance(subscribers, list):
        raise ConfigError(f"{path}: subscribers must be a list (write subscribers: [{{url: ...}}])")
    days = data.get("retention_days")
    if days is not None and not _days(days):
        raise ConfigError(f"{path}: retention_days must be a number of days >= 0 (0 keeps events forever)")
    run_days = data.get("run_retention_days")
    if run_days is not None and not _days(run_days):
        raise ConfigError(f"{path}: run_retention_days must be a number of days >= 0 (0 keeps runs forever)")
    keep = data.get("keep_runs_per_workflow")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise ConfigError(f"{path}: keep_runs_per_workflow must be a whole number >= 0 (0: no cap)")
    hosts = data.get("allowed_hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError(f"{path}: allowed_hosts must be a list of host names (write [sluice.example.com])")
    return ServerConfig(
        subscribers,
        None if days is None else float(days),
        None if run_days is None else float(run_days),
        keep,
        tuple(hosts),
    )
