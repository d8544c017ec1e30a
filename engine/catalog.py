"""The engine's catalog: the loaded workflows, swapped whole by a hot reload (engine/reload.py).

Every component that routes or starts runs (the bus, the orchestrator, the API) holds this one
object, so a swap reaches them all at once. A run never reads it again once made: it keeps the
version it was created with (``RunRecord.spec``), so a running run finishes as it began.
The swap replaces one dict reference, which the writer thread (routing) reads without a lock:
it sees the old catalog or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from workflows.spec import Workflow


class LiveCatalog(Mapping[str, Workflow]):
    """A read-only mapping of workflow name to Workflow whose contents a reload may replace."""

    def __init__(self, workflows: Mapping[str, Workflow]) -> None:
        self._workflows = dict(workflows)
        #: what was wrong with the folder at the last reload that failed, cleared by one that
        #: succeeds (``/readyz``, the dashboard's workflows page); the old versions serve meanwhile
        self.errors: tuple[str, ...] = ()
        self.reloaded_at: float | None = None  #: when the last reload (good or bad) was tried
        self._listeners: list[Callable[[frozenset[str]], None]] = []

    def __getitem__(self, name: str) -> Workflow:
        return self._workflows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._workflows)

    def __len__(self) -> int:
        return len(self._workflows)

    def __repr__(self) -> str:
        return f"<LiveCatalog {sorted(self._workflows)}>"

    def on_swap(self, listener: Callable[[frozenset[str]], None]) -> None:
        """``listener(names)`` after each swap, with the workflows added, changed or removed."""
        self._listeners.append(listener)

    def swap(self, workflows: Mapping[str, Workflow], touched: frozenset[str]) -> None:
        """Serve ``workflows`` from now on; ``touched`` are the names whose version changed."""
        self._workflows = dict(workflows)
        for listener in self._listeners:
            listener(touched)
