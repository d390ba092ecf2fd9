"""The fake Discord shards as Discord documents: each session gets only its guilds' events.

Driven by a bare websocket client, so what is tested is the fake's routing, not a library's.
Facts: https://discord.com/developers/docs/events/gateway#sharding (the formula
``shard_id = (guild_id >> 22) % num_shards``, DMs on shard 0, close codes 4010 and 4011) and
``GET /gateway/bot`` (``shards``, ``session_start_limit``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord import FakeDiscord

ALL_INTENTS = (1 << 17) - 1


class RawSession:
    """A gateway client as bare as the protocol: IDENTIFY, then the dispatches as they come."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def identify(self, token: str, shard: object = None) -> None:
        hello = await self.ws.receive_json(timeout=5)
        assert hello["op"] == 10
        data: dict[str, Any] = {"token": token, "intents": ALL_INTENTS, "properties": {}}
        if shard is not None:
            data["shard"] = shard
        await self.ws.send_str(json.dumps({"op": 2, "d": data}))

    async def dispatch(self) -> tuple[str, dict[str, Any]]:
        """The next event (op 0): its name and data."""
        while True:
            frame = await self.ws.receive_json(timeout=5)
            if frame["op"] == 0:
                return frame["t"], frame["d"]

    async def ready(self) -> tuple[dict[str, Any], list[int]]:
        """READY and the ids of the GUILD_CREATEs that follow it (one per guild in READY)."""
        event, ready = await self.dispatch()
        assert event == "READY"
        created = []
        for _ in ready["guilds"]:
            event, guild = await self.dispatch()
            assert event == "GUILD_CREATE"
            created.append(int(guild["id"]))
        return ready, created

    async def close_code(self) -> int | None:
        message = await self.ws.receive(timeout=5)
        assert message.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
        return self.ws.close_code


@asynccontextmanager
async def gateway(fake: FakeDiscord) -> AsyncIterator[RawSession]:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        yield RawSession(ws)


async def test_gateway_bot_recommends_the_configured_shard_count() -> None:
    async with (
        FakeDiscord(recommended_shards=3, max_concurrency=16) as fake,
        aiohttp.ClientSession() as http,
        http.get(
            f"{fake.url}/api/v10/gateway/bot", headers={"Authorization": f"Bot {fake.token}"}
        ) as response,
    ):
        body = await response.json()
    assert body["url"] == fake.gateway_url
    assert body["shards"] == 3
    limit = body["session_start_limit"]
    assert limit["max_concurrency"] == 16
    assert limit["total"] >= limit["remaining"] > 0 and limit["reset_after"] >= 0


def test_guilds_can_be_made_on_any_shard() -> None:
    fake = FakeDiscord()
    made = []
    for num_shards in (1, 2, 3, 16):
        for shard_id in reversed(range(num_shards)):
            gid = fake.add_guild(f"g{shard_id}/{num_shards}", shard=(shard_id, num_shards))
            assert (gid >> 22) % num_shards == shard_id
            made.append(gid)
    assert made == sorted(made) and len(set(made)) == len(made), "ids still only grow"
    assert fake._snowflake() > made[-1]


async def test_each_shard_gets_only_its_guilds_and_dms_go_to_shard_0() -> None:
    async with FakeDiscord() as fake:
        guilds = [fake.add_guild(f"on shard {n}", shard=(n, 2)) for n in (0, 1)]
        channels = [fake.add_text_channel(gid, "art") for gid in guilds]
        alice = fake.add_member(guilds[1], "alice")
        dm = fake.add_dm(alice)
        async with gateway(fake) as zero, gateway(fake) as one:
            await zero.identify(fake.token, [0, 2])
            await one.identify(fake.token, [1, 2])
            ready_zero, created_zero = await zero.ready()
            ready_one, created_one = await one.ready()
            assert [ready_zero["shard"], ready_one["shard"]] == [[0, 2], [1, 2]]
            assert (created_zero, created_one) == ([guilds[0]], [guilds[1]])
            assert [g["id"] for g in ready_one["guilds"]] == [str(guilds[1])]
            assert sorted(fake.shards_connected) == [(0, 2), (1, 2)]

            fake.post_message(channels[1], alice, "in shard 1's guild")
            fake.post_message(dm, alice, "a DM")
            fake.add_text_channel(guilds[0], "shard 0's news")
            # Shard 0 gets the DM, then its own guild's event: never shard 1's message.
            assert [(await zero.dispatch())[0] for _ in range(2)] == [
                "MESSAGE_CREATE",
                "CHANNEL_CREATE",
            ]
            event, data = await one.dispatch()
            assert (event, data["guild_id"]) == ("MESSAGE_CREATE", str(guilds[1]))
            # ... and after it, not the DM: the next thing shard 1 sees is its guild's again.
            fake.add_text_channel(guilds[1], "shard 1's news")
            event, data = await one.dispatch()
            assert (event, data["guild_id"]) == ("CHANNEL_CREATE", str(guilds[1]))
    assert fake.identifies == [(0, 2), (1, 2)]


async def test_an_unsharded_session_gets_every_guild() -> None:
    async with FakeDiscord() as fake:
        guilds = [fake.add_guild(f"on shard {n}", shard=(n, 2)) for n in (0, 1)]
        async with gateway(fake) as session:
            await session.identify(fake.token)
            ready, created = await session.ready()
    assert "shard" not in ready and created == guilds
    assert fake.identifies == [None]


@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], [0], [0, 1, 2], ["0", "2"], "0,2"])
async def test_an_invalid_shard_array_is_closed_with_4010(shard: object) -> None:
    async with FakeDiscord() as fake, gateway(fake) as session:
        await session.identify(fake.token, shard)
        assert await session.close_code() == 4010
    assert fake.identifies == [] and not fake.connected


async def test_too_many_guilds_on_one_session_is_closed_with_4011() -> None:
    async with FakeDiscord(max_guilds_per_session=1) as fake:
        guilds = [fake.add_guild(f"on shard {n}", shard=(n, 2)) for n in (0, 1)]
        async with gateway(fake) as session:
            await session.identify(fake.token)
            assert await session.close_code() == 4011
        async with gateway(fake) as session:
            await session.identify(fake.token, [1, 2])
            assert (await session.ready())[1] == [guilds[1]]
