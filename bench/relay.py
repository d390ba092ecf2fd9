"""The floor the bot is measured against: a bare relay bot, in its own process.

A plain discord.py bot doing the least any bot must do for ``/imagine``: answer with a message,
open a thread on it, send the member's attachment URL to the same (fake) AI/ML API, download the
result and upload its bytes unchanged into the thread. No checks, no database, no queue, no
re-hosted reference, no card edits. Run against the same kind of fakes in the same
``make bench`` run as the bot, its result overhead, CPU per job and peak RSS are the
denominators of the benchmark's ratios: milliseconds differ from machine to machine, the ratio
to this floor measured minutes apart on the same machine does not (issue 10).

With ``RELAY_COPIES_REFERENCE=true`` it also keeps the copy of the member's picture that DESIGN
§5 asks for (read the attachment, attach it to the answer by an edit), and nothing else: the
floor for what issue 10's CPU target includes ("re-host"), shown beside the bare one.

Speaks tests/botprocess.py's protocol: one JSON line of configuration on stdin, then one-line
commands (``stats``, ``reset``, ``stop``), each answered with one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from bench.samples import CpuSamples
from tests.procfs import proc_status, reset_peak_rss

MODEL = "flux/dev/image-to-image"  # the bot's default (DESIGN §2)

log = logging.getLogger("relay")


class Relay(discord.Client):
    def __init__(self, api_base: str, api_key: str, *, copy_reference: bool = False) -> None:
        super().__init__(
            intents=discord.Intents.default(), allowed_mentions=discord.AllowedMentions.none()
        )
        self.api_base = api_base
        self.api_key = api_key
        self.copy_reference = copy_reference
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(imagine)
        self.ready = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    async def setup_hook(self) -> None:
        self.session = aiohttp.ClientSession()
        await self.tree.sync()

    async def on_ready(self) -> None:
        self.ready.set()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await super().close()

    async def relay(
        self, interaction: discord.Interaction[Relay], image: discord.Attachment, prompt: str
    ) -> None:
        callback = await interaction.response.send_message(f"Remixing: {prompt[:1900]}")
        channel = self.get_partial_messageable(
            interaction.channel_id or 0, guild_id=interaction.guild_id
        )
        if callback.message_id is None:
            return
        answer = channel.get_partial_message(callback.message_id)
        thread = await answer.create_thread(name=prompt[:100])
        if self.copy_reference:
            copy = discord.File(io.BytesIO(await image.read()), image.filename)
            await answer.edit(attachments=[copy])
        try:
            data, seed = await self.generate(image.url, prompt)
        except (aiohttp.ClientError, KeyError, IndexError, TypeError) as exc:
            await thread.send(f"❌ {type(exc).__name__}")
            return
        embed = discord.Embed(description=prompt[:4000])
        embed.add_field(name="Seed", value=str(seed))
        embed.add_field(name="Asked by", value=interaction.user.mention)
        await thread.send(file=discord.File(io.BytesIO(data), "result.png"), embed=embed)

    async def generate(self, url: str, prompt: str) -> tuple[bytes, int]:
        """One API call and one download: the result's bytes and its seed."""
        assert self.session is not None
        body = {"model": MODEL, "prompt": prompt, "image_url": url}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        endpoint = f"{self.api_base}/v1/images/generations"
        async with self.session.post(endpoint, json=body, headers=headers) as response:
            response.raise_for_status()
            answer = await response.json()
        async with self.session.get(answer["images"][0]["url"]) as response:
            response.raise_for_status()
            return await response.read(), int(answer["seed"])


@app_commands.command(name="imagine", description="Relay a picture through the API")
async def imagine(
    interaction: discord.Interaction[Relay], image: discord.Attachment, prompt: str
) -> None:
    await interaction.client.relay(interaction, image, prompt)


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The parent's fake Discord (what FakeDiscord.patch_discord_py does, without its imports).
    discord.http.Route.BASE = config["rest"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config["gateway"])

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    copy_reference = os.environ.get("RELAY_COPIES_REFERENCE") == "true"
    relay = Relay(config["api_base"], config["api_key"], copy_reference=copy_reference)
    task = asyncio.create_task(relay.start(config["token"]))
    await asyncio.wait_for(relay.ready.wait(), 30)
    answer({"ready": True, "pid_rss": proc_status()})
    samples = CpuSamples() if config.get("cpu_samples") else None
    while line := (await reader.readline()).decode().strip():
        if line in ("stats", "settle"):
            answer(proc_status())
        elif line == "reset":
            answer({"peak_reset": reset_peak_rss(), **proc_status()})
        elif line == "stop":
            break
    await relay.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    if samples is not None:
        samples.write(Path(config["cpu_samples"]))
    answer({"stopped": True})


if __name__ == "__main__":
    asyncio.run(main())
