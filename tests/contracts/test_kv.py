"""One contract, two implementations: the tests' MemoryKV must behave as the store's StoreKV.

Trigger tests run on MemoryKV for speed; they are only worth something while the two agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.store.kv import StoreKV
from engine.store.store import Store
from tests.support.triggers import MemoryKV

VALUES = [0, -1, 2**53, 1.5, "", "ünïcode ✓", None, True, [], [1, "a", None], {"a": {"b": [1, 2]}}]


@pytest.fixture(params=["store", "memory"])
async def kv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryKV()
        return
    store = Store(tmp_path / "sluice.db")
    await store.open()
    try:
        yield StoreKV(store)
    finally:
        await store.close()


async def test_a_missing_key_is_none(kv: Any) -> None:
    assert await kv.get("never-set") is None


@pytest.mark.parametrize("value", VALUES, ids=repr)
async def test_values_round_trip_as_json(kv: Any, value: Any) -> None:
    await kv.set("k", value)
    assert await kv.get("k") == value


async def test_a_set_replaces_the_value_and_keys_are_independent(kv: Any) -> None:
    await kv.set("a", {"n": 1})
    await kv.set("b", "other")
    await kv.set("a", [2])
    assert (await kv.get("a"), await kv.get("b")) == ([2], "other")


async def test_tuples_come_back_as_lists(kv: Any) -> None:
    """JSON has no tuple: a trigger that stores one must not expect it back."""
    await kv.set("t", (1, 2))
    assert await kv.get("t") == [1, 2]


async def test_store_kv_survives_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "sluice.db")
    await store.open()
    await StoreKV(store).set("last-fire", "2026-12-03T00:00:00Z")
    await store.close()
    again = Store(tmp_path / "sluice.db")
    await again.open()
    try:
        assert await StoreKV(again).get("last-fire") == "2026-12-03T00:00:00Z"
    finally:
        await again.close()


async def test_update_sets_and_deletes_in_one_call_and_prefixed_lists_in_key_order(kv: Any) -> None:
    await kv.set("f:b", 1)
    await kv.set("g:a", "elsewhere")
    await kv.update({"f:a": [1, 2], "f:c": {"x": None}, "f:b": 2}, deleted=["f:c", "f:none"])
    assert await kv.prefixed("f:") == [("f:a", [1, 2]), ("f:b", 2)]
    await kv.update({}, deleted=["f:a"])
    assert await kv.prefixed("f:") == [("f:b", 2)] and await kv.get("g:a") == "elsewhere"
