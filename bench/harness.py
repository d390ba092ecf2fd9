"""Fakes, members and the bot process for one benchmark phase, and what they observed.

The fakes are the test suite's (tests/fakes) with two benchmark-only touches, both here:
results are a photo-like 1.5 MB PNG (the fake's solid-colour PNGs are ~3 KB, which would hide
the cost of moving a real 1 MP result), and the API can hold calls behind a gate so a queue
can be filled before the clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import re
import resource
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from aiohttp import web
from PIL import Image

from tests.botprocess import MODULE, BotProcess
from tests.fakes.aimlapi import FakeAimlApi, responses
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeRequest
from tests.world import API_KEY, TOKEN

ROOT = Path(__file__).resolve().parent.parent
SEND = re.compile(r"^/channels/(\d+)/messages$")
EDIT = re.compile(r"^/channels/(\d+)/messages/(\d+)$")
REROLL_ID = re.compile(r"^fluxbot:reroll:(\d+)$")


@functools.cache
def photo_png(width: int, height: int) -> bytes:
    """A PNG that compresses like a photograph (~1.5 MB at 1024×768), built once per size."""
    gradient = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    mirrored = gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    bands = [
        Image.blend(base, Image.effect_noise((width, height), 40), 0.15)
        for base in (gradient, radial, mirrored)
    ]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
    return [photo_png(width, height)] * count


@contextlib.contextmanager
def photo_results() -> Iterator[None]:
    """Make the fake API return photo-like PNGs instead of solid colours."""
    with mock.patch.object(responses, "solid_pngs", _photo_pngs):
        yield


class GatedApi(FakeAimlApi):
    """The fake API, holding each call before its inference until ``gate`` is set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = asyncio.Event()
        self.gate.set()

    async def _pause(self, seconds: float) -> None:
        await self.gate.wait()
        await super()._pause(seconds)


@dataclass
class Result:
    """A result message the fake Discord accepted (or a failure line in a thread)."""

    channel_id: int
    message_id: int
    generation_id: int | None
    user_id: int | None
    seed: int | None
    done_at: float
    failed: bool


@dataclass
class Observed:
    """What the fakes saw, fed by a FakeDiscord observer as requests complete."""

    results: list[Result] = field(default_factory=list)
    rehosted_at: dict[int, float] = field(default_factory=dict)  # card id -> reference attached
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, entry: FakeRequest, response: web.StreamResponse) -> None:
        if entry.status != 200 or not isinstance(entry.json, dict):
            return
        if entry.method == "PATCH" and entry.files and (edit := EDIT.match(entry.path)):
            self.rehosted_at.setdefault(int(edit[2]), entry.done_at)
            return
        send = SEND.match(entry.path)
        if entry.method != "POST" or send is None:
            return
        failed = str(entry.json.get("content") or "").startswith("❌")
        if not entry.files and not failed:
            return  # the ephemeral "on it" notes go through webhooks; other texts don't count
        body = json.loads(response.body) if isinstance(response, web.Response) else {}
        embed = (entry.json.get("embeds") or [{}])[0]
        fields = {f["name"]: f["value"] for f in embed.get("fields", [])}
        custom_ids = [
            c.get("custom_id", "")
            for row in entry.json.get("components") or []
            for c in row.get("components", [])
        ]
        reroll = next((m for c in custom_ids if (m := REROLL_ID.match(c))), None)
        asked = re.search(r"\d+", fields.get("Asked by", ""))
        self.results.append(
            Result(
                channel_id=int(send[1]),
                message_id=int(body.get("id", 0)),
                generation_id=int(reroll[1]) if reroll else None,
                user_id=int(asked[0]) if asked else None,
                seed=int(fields["Seed"]) if fields.get("Seed", "").isdigit() else None,
                done_at=entry.done_at,
                failed=failed,
            )
        )
        self.changed.set()

    async def wait_results(self, count: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``count`` results (or failures) arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.results) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True


@contextlib.asynccontextmanager
async def bot_process(
    discord_url: str,
    settings: dict[str, Any],
    log: Path,
    module: str = MODULE,
    profile: Path | None = None,
    monitor: bool = True,
    name: str = "bot",
) -> AsyncIterator[BotProcess]:
    """The bot (tests/botprocess.py) or the relay (bench/relay.py) in a child process, stopped
    through its protocol at the end. ``profile``: a file for py-spy's samples (collapsed
    stacks) of the ready process, beside which it writes its own (``.samples.txt``,
    ``bench/samples.py``); ``monitor``: whether it measures its event-loop lag (costs CPU)."""
    process = await BotProcess.start(
        discord_url,
        {"discord_token": TOKEN, "aimlapi_key": API_KEY, **settings},
        name=name,
        log_file=log,
        module=module,
        monitor=monitor,
        cpu_samples=None if profile is None else own_samples(profile),
    )
    try:
        spy = await _py_spy(process.pid, profile) if profile else None
        yield process
        await process.close()
        if spy is not None:
            await spy.wait()  # it writes its file once the process it samples is gone
    finally:
        if process.returncode is None:
            await process.kill()


def own_samples(profile: Path) -> Path:
    """Where a process profiled into ``X.py-spy.txt`` writes its own samples: ``X.samples.txt``."""
    return profile.with_suffix("").with_suffix(".samples.txt")


async def _py_spy(pid: int, output: Path) -> asyncio.subprocess.Process:
    """py-spy (``pip install py-spy``) sampling ``pid`` without pausing it, 200 times a second."""
    beside = Path(sys.executable).with_name("py-spy")
    command = str(beside) if beside.exists() else shutil.which("py-spy")
    if command is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return await asyncio.create_subprocess_exec(
        command,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopLag:
    """Scheduling delay in this (the fakes') process: if it is large the figures are the fakes'."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - start - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass
class Server:
    """One guild's worth of fakes: channels, members and a reference picture each can send."""

    discord: FakeDiscord
    api: GatedApi
    channels: list[int]
    members: list[int]
    reference: bytes
    observed: Observed
    interactions: list[FakeInteraction] = field(default_factory=list)
    sent_at: dict[int, float] = field(default_factory=dict)  # interaction id -> monotonic

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        *,
        latency: float,
        members: int,
        channels: int,
        width: int,
        height: int,
        bucket_limit: int,
        bucket_window: float,
        channel_write_limit: tuple[int, float] | None = None,
    ) -> AsyncIterator[Server]:
        """``channel_write_limit``: Discord's per-channel sends/edits/threads budget (phase D);
        ``None`` puts those routes under ``bucket_limit`` like the rest (phases A–C)."""
        async with (
            GatedApi(api_key=API_KEY, latency=latency) as api,
            FakeDiscord(
                token=TOKEN,
                bucket_limit=bucket_limit,
                bucket_window=bucket_window,
                channel_write_limit=channel_write_limit,
            ) as discord,
        ):
            guild = discord.add_guild("Busy Server")
            server = cls(
                discord=discord,
                api=api,
                channels=[discord.add_text_channel(guild, f"art-{n}") for n in range(channels)],
                members=[discord.add_member(guild, f"member{n}") for n in range(members)],
                reference=photo_png(width, height),
                observed=Observed(),
            )
            discord.observers.append(server.observed.observe)
            yield server

    async def imagine(self, number: int) -> FakeInteraction:
        """Member ``number % members`` runs /imagine in channel ``number % channels``."""
        channel = self.channels[number % len(self.channels)]
        member = self.members[number % len(self.members)]
        attachment = self.discord.upload_attachment(
            channel, "photo.png", self.reference, "image/png"
        )
        interaction = await self.discord.invoke_command(
            "imagine",
            {"image": attachment["id"], "prompt": f"bench job {number}: a lighthouse at dusk"},
            user_id=member,
            channel_id=channel,
            attachments=[attachment],
        )
        self.sent_at[interaction.id] = time.monotonic()
        self.interactions.append(interaction)
        return interaction

    async def reroll(self, result: Result) -> FakeInteraction:
        """The member who asked presses Reroll on a result."""
        interaction = await self.discord.click(
            result.channel_id,
            result.message_id,
            f"fluxbot:reroll:{result.generation_id}",
            user_id=result.user_id or self.members[0],
        )
        self.interactions.append(interaction)
        return interaction
