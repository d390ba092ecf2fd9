"""End-to-end harness: the real bot, real discord.py and a real database, against both fakes.

The ``world`` fixture (tests/conftest.py) hands each test one of these."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import FluxBot, create_bot
from services.config import Settings
from tests import images
from tests.fakes.aimlapi import FakeAimlApi
from tests.fakes.discord import FakeDiscord, FakeInteraction, rules

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GfAkEt.discord-token-for-tests-0123456789"
API_KEY = "aiml-test-key-5f2b9c0e7d1a4c3b8e6f"


#: Message types of a command's answer (slash command, context menu): the job cards.
COMMAND_REPLIES = frozenset({20, 23})


class ReadySignal(logging.Handler):
    """Sets an event when the bot logs its ``fluxbot ready:`` line, as an operator would watch."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("fluxbot ready:"):
            self.event.set()


@dataclass(frozen=True)
class Place:
    """A guild with one text channel and one member: somewhere a test can run a command."""

    guild: int
    channel: int
    member: int


class World:
    """One guild with members and channels, both fakes, and the bot under test."""

    def __init__(self, discord: FakeDiscord, api: FakeAimlApi, database_url: str) -> None:
        self.discord = discord
        self.api = api
        self.database_url = database_url
        self.guild = discord.add_guild("Remix Club")
        self.channel = discord.add_text_channel(self.guild, "art")
        self.alice = discord.add_member(self.guild, "alice")
        self.bob = discord.add_member(self.guild, "bob")
        self.moderator = discord.add_member(
            self.guild, "mod", permissions=rules.DEFAULT_MEMBER_PERMISSIONS | rules.MANAGE_MESSAGES
        )
        self.bot: FluxBot | None = None
        self._task: asyncio.Task[None] | None = None

    def settings(self, **overrides: Any) -> Settings:
        return Settings(_env_file=None, **self.setting_values(**overrides))  # type: ignore[call-arg]

    def setting_values(self, **overrides: Any) -> dict[str, Any]:
        """The bot's settings here by name, for this process or a child's environment."""
        values: dict[str, Any] = {
            "discord_token": TOKEN,
            "aimlapi_key": API_KEY,
            "aimlapi_base_url": self.api.base_url,
            "database_url": self.database_url,
            "shutdown_grace_seconds": 5,
            # Cards edited as often as the fake Discord allows, so tests wait less.
            "card_edit_interval_seconds": 0.1,
        }
        values.update(overrides)
        return values

    async def start_bot(self, **overrides: Any) -> FluxBot:
        bot = create_bot(self.settings(**overrides), guild_ready_timeout=0.05)
        signal = ReadySignal()
        logging.getLogger("fluxbot").addHandler(signal)
        try:
            self._task = asyncio.create_task(bot.start(TOKEN))
            ready = asyncio.create_task(signal.event.wait())
            done, _ = await asyncio.wait(
                {self._task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED
            )
            if ready not in done:
                ready.cancel()
                if self._task in done:
                    self._task.result()  # surfaces the start-up error
                raise TimeoutError("bot never logged 'fluxbot ready:'")
        finally:
            logging.getLogger("fluxbot").removeHandler(signal)
        self.bot = bot
        return bot

    async def stop_bot(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)
        self.bot, self._task = None, None

    async def restart_bot(self, **overrides: Any) -> FluxBot:
        await self.stop_bot()
        return await self.start_bot(**overrides)

    def guild_on_shard(self, shard_id: int, num_shards: int = 2) -> Place:
        """A new guild whose id lands on ``shard_id`` of ``num_shards`` (Discord's formula,
        ``(guild_id >> 22) % num_shards``), with a channel and a member."""
        guild = self.discord.add_guild(
            f"Shard {shard_id} of {num_shards}", shard=(shard_id, num_shards)
        )
        channel = self.discord.add_text_channel(guild, "art")
        return Place(guild, channel, self.discord.add_member(guild, f"member-{shard_id}"))

    # -- what members do ------------------------------------------------------------------

    def upload(
        self,
        data: bytes | None = None,
        *,
        filename: str = "cat.png",
        content_type: str | None = "image/png",
        channel: int | None = None,
    ) -> dict[str, Any]:
        return self.discord.upload_attachment(
            channel or self.channel,
            filename,
            images.png(64, 48) if data is None else data,
            content_type,
        )

    async def imagine(
        self,
        prompt: str = "a cat wearing a tiny hat",
        *,
        user: int | None = None,
        channel: int | None = None,
        attachment: dict[str, Any] | None = None,
        validate: bool = True,
        **options: Any,
    ) -> FakeInteraction:
        channel = channel or self.channel
        attachment = attachment or self.upload(channel=channel)
        return await self.discord.invoke_command(
            "imagine",
            {"image": attachment["id"], "prompt": prompt, **options},
            user_id=user or self.alice,
            channel_id=channel,
            attachments=[attachment],
            validate=validate,
        )

    async def card_of(self, interaction: FakeInteraction) -> int:
        """The id of the public job card a command answered with."""
        response = await interaction.response()
        assert response["type"] == 4 and not interaction.ephemeral, response
        return int(interaction.original_message["id"])

    async def result_in(
        self, channel_id: int, *, after: int = 0, predicate: Callable[[dict], bool] | None = None
    ) -> dict[str, Any]:
        """The next bot message in ``channel_id`` carrying an image or a failure line."""

        def is_result(message: dict[str, Any]) -> bool:
            if message["channel_id"] != str(channel_id) or int(message["id"]) <= after:
                return False
            if message["type"] in COMMAND_REPLIES:  # a job card (in a thread, beside results)
                return False
            if predicate is not None:
                return predicate(message)
            return bool(message["attachments"]) or message["content"].startswith("❌")

        return await self.discord.wait_for_message(is_result, timeout=15)

    async def card_status(self, card_id: int, expected: str) -> dict[str, Any]:
        """Wait until the card's Status field starts with ``expected``."""

        def shows(message: dict[str, Any]) -> bool:
            if int(message["id"]) != card_id or not message["embeds"]:
                return False
            fields = message["embeds"][0].get("fields", [])
            return any(f["name"] == "Status" and f["value"].startswith(expected) for f in fields)

        return await self.discord.wait_for_message(shows, timeout=15)

    def bot_messages(self) -> list[dict[str, Any]]:
        """Every message body the bot sent or edited: channel, webhook and interaction routes."""
        bodies = []
        for request in self.discord.requests:
            if request.method not in {"POST", "PATCH"} or not isinstance(request.json, dict):
                continue
            body = (
                request.json.get("data", request.json)
                if "/callback" in request.path
                else request.json
            )
            if isinstance(body, dict) and {"content", "embeds", "attachments"} & body.keys():
                bodies.append(body)
        return bodies
