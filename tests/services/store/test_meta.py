"""The meta key/value table."""

from __future__ import annotations

from services.store import Store


async def test_meta(store: Store) -> None:
    assert await store.meta.get("command_tree_hash") is None
    await store.meta.set("command_tree_hash", "abc")
    await store.meta.set("command_tree_hash", "def")
    await store.meta.set("other", "")
    assert await store.meta.get("command_tree_hash") == "def"
    assert await store.meta.get("other") == ""
