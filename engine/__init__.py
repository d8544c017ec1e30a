"""Sluice's asyncio core: store, bus, orchestrator, executors, queues, notify, API and CLI."""

__version__ = "0.1.0"
