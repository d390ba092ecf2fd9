"""Self-test of the fake Discord, driven by a throwaway discord.py bot (not fluxbot's).

If these pass, an unmodified discord.py client can log in, sync and answer commands, open
threads, upload files, handle buttons and modals against the fake — and the fake refuses
what Discord refuses.
"""

from __future__ import annotations

import asyncio
import io
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, rules


def png(width: int = 8, height: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buf, "PNG")
    return buf.getvalue()


class Remix(discord.ui.Modal, title="Remix"):
    """One input in an action row (discord.py's default) and one in a Label (type 18)."""

    prompt = discord.ui.TextInput(label="Prompt", custom_id="prompt", default="a cat")
    seed = discord.ui.Label(
        text="Seed", component=discord.ui.TextInput(custom_id="seed", required=False)
    )

    def __init__(self, seen: dict[str, Any]) -> None:
        super().__init__(custom_id="test:remix")
        self.seen = seen

    async def on_submit(self, interaction: discord.Interaction) -> None:
        assert isinstance(self.seed.component, discord.ui.TextInput)
        self.seen["modal"] = (self.prompt.value, self.seed.component.value)
        await interaction.response.send_message("remixed", ephemeral=True)


class Buttons(discord.ui.View):
    def __init__(self, seen: dict[str, Any]) -> None:
        super().__init__(timeout=None)
        self.seen = seen

    @discord.ui.button(label="Remix", custom_id="test:remix")
    async def remix(self, interaction: discord.Interaction, _: discord.ui.Button[Buttons]) -> None:
        self.seen["clicked_by"] = interaction.user.id
        await interaction.response.send_modal(Remix(self.seen))


class ThrowawayBot(commands.Bot):
    """The smallest bot exercising what fluxbot needs: a command, a thread, files, a view."""

    def __init__(self, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.ready = asyncio.Event()
        self.seen: dict[str, Any] = {}
        self.gate = asyncio.Event()
        self.done: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        for name, callback in (("echo", self.echo), ("late", self.late), ("think", self.think)):
            command = app_commands.Command(name=name, description=name.title(), callback=callback)
            self.tree.add_command(command)

    async def setup_hook(self) -> None:
        self.add_view(Buttons(self.seen))

    async def on_ready(self) -> None:
        self.ready.set()

    async def echo(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        text: app_commands.Range[str, 1, 90],
    ) -> None:
        """Answer, open a thread on the answer, post a file with an embed into it."""
        response = await interaction.response.send_message(f"@everyone {text}")
        card = response.resource
        assert isinstance(card, discord.InteractionMessage)
        self.seen["reference"] = await image.read()
        thread = await card.create_thread(name=text)
        embed = discord.Embed(title="Result", description=text).set_image(
            url="attachment://out.png"
        )
        file = discord.File(io.BytesIO(png(16, 9)), "out.png")
        sent = await thread.send(file=file, embed=embed, view=Buttons(self.seen))
        self.seen["fetched"] = await thread.fetch_message(sent.id)
        self.seen["thread"] = thread
        self.done["echo"].set()

    async def late(self, interaction: discord.Interaction) -> None:
        """Answer only after the test let the deadline pass."""
        await self.gate.wait()
        try:
            await interaction.response.send_message("too late")
        except discord.NotFound as exc:
            self.seen["late"] = exc.code
        self.done["late"].set()

    async def think(self, interaction: discord.Interaction) -> None:
        """Defer, then answer through the interaction webhook (replaces "thinking...")."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("done", ephemeral=True)
        self.seen["think"] = interaction
        self.done["think"].set()


@dataclass
class World:
    fake: FakeDiscord
    bot: ThrowawayBot
    guild_id: int
    channel_id: int
    user_id: int


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        gid = fake.add_guild("Test guild")
        cid = fake.add_text_channel(gid, "general")
        uid = fake.add_member(gid, "alice")
        with fake.patch_discord_py():
            bot = ThrowawayBot(guild_ready_timeout=0.05)
            await bot.login(fake.token)
            task = asyncio.create_task(bot.connect())
            try:
                async with asyncio.timeout(5):
                    await bot.ready.wait()
                await bot.tree.sync()
                yield World(fake, bot, gid, cid, uid)
            finally:
                await bot.close()
                await task


async def test_login_ready_and_permissions(world: World) -> None:
    guild = world.bot.get_guild(world.guild_id)
    assert guild is not None and guild.me is not None
    channel = guild.get_channel(world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    perms = channel.permissions_for(guild.me)
    assert perms.value == rules.DEFAULT_BOT_PERMISSIONS
    assert [c["name"] for c in world.fake.commands] == ["echo", "late", "think"]
    assert world.fake.rejections == []


async def test_command_thread_file_and_cdn(world: World) -> None:
    fake = world.fake
    reference = fake.upload_attachment(
        world.channel_id, "cat.png", png(), "image/png", ephemeral=True
    )
    assert (reference["width"], reference["height"]) == (8, 6)
    inter = await fake.invoke_command(
        "echo",
        {"image": reference, "text": "a cat"},
        user_id=world.user_id,
        channel_id=world.channel_id,
    )
    response = await inter.response()
    assert response["type"] == 4 and not inter.ephemeral
    assert inter.ack_latency is not None and inter.ack_latency < 3
    card = inter.original_message
    assert card is not None and card["mention_everyone"] is False  # AllowedMentions.none()

    result = await fake.wait_for_message(
        lambda m: m["channel_id"] == str(card["id"]) and m["attachments"]
    )
    assert fake.threads[int(card["id"])]["parent_id"] == world.channel_id  # thread id == message id
    assert world.bot.seen["reference"] == png()
    assert result["embeds"][0]["image"]["url"] == result["attachments"][0]["url"]
    assert fake.attachment_bytes(result["attachments"][0]) == png(16, 9)
    async with asyncio.timeout(5):
        await world.bot.done["echo"].wait()
    fetched: discord.Message = world.bot.seen["fetched"]
    assert fetched.embeds[0].description == "a cat" and fetched.components

    # Day-old URLs die; a freshly fetched message carries a working one.
    old_url = result["attachments"][0]["url"]
    fake.advance_clock(25 * 3600)
    with pytest.raises(discord.NotFound):
        await world.bot.http.get_from_cdn(old_url)
    fresh = await world.bot.seen["thread"].fetch_message(fetched.id)
    assert await fresh.attachments[0].read() == png(16, 9)

    fake.revoke_attachment(reference["id"])
    with pytest.raises(discord.NotFound):
        await world.bot.http.get_from_cdn(reference["url"])
    assert [r["status"] for r in fake.rejections] == [404, 404]


async def test_late_and_double_callbacks(world: World) -> None:
    fake = world.fake
    inter = await fake.invoke_command(
        "late", {}, user_id=world.user_id, channel_id=world.channel_id
    )
    fake.advance_clock(3.5)
    world.bot.gate.set()
    async with asyncio.timeout(5):
        await world.bot.done["late"].wait()
    assert world.bot.seen["late"] == 10062 and inter.callback is None

    # A fresh command answered once by the bot, then again by hand: 40060.
    world.bot.gate.set()
    done = await fake.invoke_command("late", {}, user_id=world.user_id, channel_id=world.channel_id)
    await done.response()
    url = f"{fake.url}/api/v10/interactions/{done.id}/{done.token}/callback"
    async with aiohttp.ClientSession() as http, http.post(url, json={"type": 5}) as resp:
        assert resp.status == 400 and resp.content_type == "application/json"
        assert (await resp.json())["code"] == 40060


async def test_defer_followup_and_token_expiry(world: World) -> None:
    fake = world.fake
    inter = await fake.invoke_command(
        "think", {}, user_id=world.user_id, channel_id=world.channel_id
    )
    assert (await inter.response())["type"] == 5 and inter.ephemeral
    async with asyncio.timeout(5):
        await world.bot.done["think"].wait()
    assert inter.followups == [] and inter.original_message is None  # replaced, ephemeral
    assert fake.messages(world.channel_id) == []
    fake.advance_clock(15 * 60 + 1)
    with pytest.raises(discord.HTTPException) as expired:
        await world.bot.seen["think"].followup.send("too late")
    assert expired.value.code == 50027


async def test_bursts_follow_rate_limit_headers(world: World) -> None:
    channel = world.bot.get_channel(world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    await asyncio.gather(*(channel.send(f"message {i}") for i in range(6)))  # 5 per 5 s
    assert len(world.fake.messages(world.channel_id)) == 6 and world.fake.rejections == []


async def raw(
    fake: FakeDiscord, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any, Any]:
    """One REST call as the bot, bypassing discord.py's rate limiter: (status, JSON, headers)."""
    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{fake.url}/api/v10{path}", json=body, headers=headers) as r,
    ):
        return r.status, await r.json() if r.content_type == "application/json" else None, r.headers


async def test_channel_writes_have_discords_per_channel_budget_and_headers(world: World) -> None:
    fake, cid = world.fake, world.channel_id
    sent = [
        await raw(fake, "POST", f"/channels/{cid}/messages", {"content": "hi"}) for _ in "12345"
    ]
    assert [s for s, _, _ in sent] == [200] * 5
    assert [h["X-RateLimit-Remaining"] for _, _, h in sent] == ["4", "3", "2", "1", "0"]
    assert {h["X-RateLimit-Limit"] for _, _, h in sent} == {"5"}
    assert 4.0 < float(sent[-1][2]["X-RateLimit-Reset-After"]) <= 5.01

    status, body, headers = await raw(fake, "POST", f"/channels/{cid}/messages", {"content": "6"})
    assert status == 429 and body["global"] is False and 4.0 < body["retry_after"] <= 5.0
    assert headers["X-RateLimit-Scope"] == "user" and int(headers["Retry-After"]) >= 1
    other = fake.add_text_channel(world.guild_id, "other")  # a channel of its own budget
    assert (await raw(fake, "POST", f"/channels/{other}/messages", {"content": "x"}))[0] == 200

    first_id = sent[0][1]["id"]
    from_message = await raw(
        fake, "POST", f"/channels/{cid}/messages/{first_id}/threads", {"name": "a"}
    )
    standalone = await raw(fake, "POST", f"/channels/{cid}/threads", {"name": "b", "type": 11})
    assert from_message[0] == standalone[0] == 201
    assert from_message[2]["X-RateLimit-Bucket"] == standalone[2]["X-RateLimit-Bucket"]
    assert standalone[2]["X-RateLimit-Remaining"] == "3"  # one budget for thread creation
    assert [r["status"] for r in fake.rejections] == [429]


async def test_edits_of_hour_old_messages_have_their_own_smaller_limit(world: World) -> None:
    fake, cid = world.fake, world.channel_id
    _, old, _ = await raw(fake, "POST", f"/channels/{cid}/messages", {"content": "old"})
    fake.advance_clock(3601)
    _, young, _ = await raw(fake, "POST", f"/channels/{cid}/messages", {"content": "young"})
    edit = {"content": "edited"}
    assert (await raw(fake, "PATCH", f"/channels/{cid}/messages/{old['id']}", edit))[0] == 200
    status, body, _ = await raw(fake, "PATCH", f"/channels/{cid}/messages/{old['id']}", edit)
    assert status == 429 and body["code"] == 30046 and body["retry_after"] > 0
    assert "older than 1 hour" in body["message"]
    assert (await raw(fake, "PATCH", f"/channels/{cid}/messages/{young['id']}", edit))[0] == 200
    assert fake.old_message_edits == 2


async def test_a_channel_the_bot_cannot_see_answers_50001_to_everything(world: World) -> None:
    fake = world.fake
    hidden = fake.add_text_channel(world.guild_id, "staff", bot_permissions=0)
    _, seen, _ = await raw(fake, "POST", f"/channels/{world.channel_id}/messages", {"content": "x"})
    for method, path in [
        ("POST", f"/channels/{hidden}/messages"),
        ("GET", f"/channels/{hidden}/messages"),
        ("GET", f"/channels/{hidden}/messages/{seen['id']}"),
        ("POST", f"/channels/{hidden}/threads"),
    ]:
        status, body, _ = await raw(fake, method, path, {"content": "x", "name": "t", "type": 11})
        assert (status, body["code"]) == (403, 50001), (method, path)


async def test_a_voice_chat_takes_messages_but_no_threads_and_reading_needs_connect(
    world: World,
) -> None:
    fake = world.fake
    voice = fake.add_voice_channel(
        world.guild_id, "hangout", bot_permissions=rules.DEFAULT_BOT_PERMISSIONS
    )
    status, message, _ = await raw(fake, "POST", f"/channels/{voice}/messages", {"content": "hi"})
    assert status == 200
    status, body, _ = await raw(fake, "GET", f"/channels/{voice}/messages/{message['id']}")
    assert (status, body["code"]) == (403, 50001)
    status, body, _ = await raw(
        fake, "POST", f"/channels/{voice}/messages/{message['id']}/threads", {"name": "t"}
    )
    assert (status, body["code"]) == (400, 50024)
    fake.set_bot_permissions(voice, rules.DEFAULT_BOT_PERMISSIONS | rules.CONNECT)
    assert (await raw(fake, "GET", f"/channels/{voice}/messages/{message['id']}"))[0] == 200
    payload = fake._channel_payload(voice)
    assert payload["type"] == 2 and "bitrate" in payload


async def test_archived_threads_refuse_edits_until_a_message_unarchives_them(world: World) -> None:
    fake = world.fake
    thread = fake.add_thread(world.channel_id, "cats")
    _, message, _ = await raw(fake, "POST", f"/channels/{thread}/messages", {"content": "hi"})
    fake.archive_thread(thread)
    status, body, _ = await raw(
        fake, "PATCH", f"/channels/{thread}/messages/{message['id']}", {"content": "x"}
    )
    assert (status, body["code"]) == (403, 50083)
    assert (await raw(fake, "POST", f"/channels/{thread}/messages", {"content": "back"}))[0] == 200
    assert fake.threads[thread].archived is False
    assert (
        await raw(fake, "PATCH", f"/channels/{thread}/messages/{message['id']}", {"content": "x"})
    )[0] == 200


async def test_locked_threads_refuse_the_bot_unless_it_may_manage_threads(world: World) -> None:
    fake = world.fake
    thread = fake.add_thread(world.channel_id, "rules")
    _, message, _ = await raw(fake, "POST", f"/channels/{thread}/messages", {"content": "hi"})
    fake.lock_thread(thread)
    for method, path in [
        ("POST", f"/channels/{thread}/messages"),
        ("PATCH", f"/channels/{thread}/messages/{message['id']}"),
    ]:
        status, body, _ = await raw(fake, method, path, {"content": "x"})
        assert (status, body["code"]) == (403, 160005), method
    fake.set_bot_permissions(world.channel_id, rules.DEFAULT_BOT_PERMISSIONS | rules.MANAGE_THREADS)
    assert (await raw(fake, "POST", f"/channels/{thread}/messages", {"content": "x"}))[0] == 200


async def test_attachment_size_limit_is_the_members_and_uploads_follow_the_boost_tier(
    world: World,
) -> None:
    fake = world.fake
    nitro = fake.add_member(world.guild_id, "nitro", premium_type=2)
    command = await fake.invoke_command("late", {}, user_id=nitro, channel_id=world.channel_id)
    plain = await fake.invoke_command(
        "late", {}, user_id=world.user_id, channel_id=world.channel_id
    )
    world.bot.gate.set()
    assert command.payload["attachment_size_limit"] == 500 * rules.MIB  # the member's Nitro
    assert plain.payload["attachment_size_limit"] == 10 * rules.MIB
    assert fake._filesize_limit(world.channel_id) == 10 * rules.MIB  # what the bot may upload

    joined = asyncio.ensure_future(world.bot.wait_for("guild_available", timeout=5))
    boosted = fake.add_guild("Boosted", premium_tier=2)
    channel = fake.add_text_channel(boosted, "art")
    guild = await joined
    assert guild.filesize_limit == fake._filesize_limit(channel) == 50 * rules.MIB
    updated = asyncio.ensure_future(world.bot.wait_for("guild_update", timeout=5))
    fake.set_premium_tier(boosted, 0)
    _, after = await updated
    assert after.filesize_limit == fake._filesize_limit(channel) == 10 * rules.MIB


async def test_button_and_modal_round_trip(world: World) -> None:
    fake = world.fake
    channel = world.bot.get_channel(world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("pick", view=Buttons(world.bot.seen))
    click = await fake.click(world.channel_id, message.id, "test:remix", user_id=world.user_id)
    assert (await click.response())["type"] == 9
    assert click.modal is not None and click.modal["components"][1]["type"] == 18
    submitted = await fake.submit_modal(click, {"seed": "42"})
    await submitted.response()
    assert world.bot.seen["clicked_by"] == world.user_id
    assert world.bot.seen["modal"] == ("a cat", "42")
    assert submitted.ephemeral and fake.messages(world.channel_id)[-1]["content"] == "pick"
    with pytest.raises(AssertionError, match="no button"):
        await fake.click(world.channel_id, message.id, "nope", user_id=world.user_id)


async def test_member_messages_selects_and_who_may_delete_what(world: World) -> None:
    fake = world.fake
    posted = fake.post_message(
        world.channel_id,
        world.user_id,
        "look",
        files=[("cat.png", png())],
        embeds=[fake.image_embed(png(4, 4))],
    )
    assert posted["author"]["id"] == str(world.user_id)
    assert posted["attachments"][0]["content_type"] == "image/png"
    thumbnail = posted["embeds"][0]["thumbnail"]
    async with aiohttp.ClientSession() as session, session.get(thumbnail["proxy_url"]) as resp:
        assert resp.status == 200 and await resp.read() == png(4, 4)
    channel = world.bot.get_channel(world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as refused:
        await channel.get_partial_message(int(posted["id"])).delete()
    assert refused.value.code == 50013  # someone else's message needs Manage Messages
    fake.set_bot_permissions(
        world.channel_id, rules.DEFAULT_BOT_PERMISSIONS | rules.MANAGE_MESSAGES
    )
    await channel.get_partial_message(int(posted["id"])).delete()
    assert fake.messages(world.channel_id) == []

    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Select(custom_id="test:pick", options=[discord.SelectOption(label="a")])
    )
    menu = await channel.send("pick one", view=view)
    with pytest.raises(AssertionError, match="not among the options"):
        await fake.choose(world.channel_id, menu.id, "test:pick", ["b"], user_id=world.user_id)
    chosen = await fake.choose(world.channel_id, menu.id, "test:pick", ["a"], user_id=world.user_id)
    assert chosen.payload["data"] == {
        "custom_id": "test:pick",
        "component_type": 3,
        "values": ["a"],
    }


async def test_limits_and_permissions_are_enforced(world: World) -> None:
    fake = world.fake
    guild = world.bot.get_guild(world.guild_id)
    assert guild is not None
    channel = guild.get_channel(world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send(embed=discord.Embed(description="x" * 4097))
    assert too_long.value.code == 50035 and "embeds.0.description" in str(too_long.value)

    no_threads = fake.add_text_channel(
        world.guild_id,
        "locked",
        bot_permissions=rules.DEFAULT_BOT_PERMISSIONS & ~rules.CREATE_PUBLIC_THREADS,
    )
    locked = await world.bot.fetch_channel(no_threads)
    assert isinstance(locked, discord.TextChannel)
    message = await locked.send("no threads here")
    with pytest.raises(discord.Forbidden) as forbidden:
        await message.create_thread(name="x")
    assert forbidden.value.code == 50013
    with pytest.raises(discord.HTTPException) as big:
        await locked.send(file=discord.File(io.BytesIO(b"0" * (10 * 1024 * 1024 + 1)), "big.bin"))
    assert big.value.status == 413 and big.value.code == 40005
    assert [r["code"] for r in fake.rejections] == [50035, 50013, 40005]


async def test_scripted_rate_limit_is_retried(world: World) -> None:
    fake = world.fake
    fake.rate_limit_next("POST", r"^/channels/\d+/messages$", retry_after=0.05)
    channel = world.bot.get_channel(world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("after a 429")
    assert len(fake.rate_limited) == 1 and fake.rejections == []
    assert fake.messages(world.channel_id)[-1]["id"] == str(sent.id)


async def test_wrong_token_is_refused() -> None:
    async with FakeDiscord() as fake:
        with fake.patch_discord_py():
            bot = ThrowawayBot()
            with pytest.raises(discord.LoginFailure):
                await bot.login("wrong")
            await bot.close()
    assert [r["status"] for r in fake.rejections] == [401]
