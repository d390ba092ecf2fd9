"""METRICS_PORT: a scrape shows jobs by outcome and model, the queue, and both latencies."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.model_registry import DEFAULT_MODEL
from tests.e2e.test_queue import card_button
from tests.world import World


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on the bot's /metrics, keyed by name and labels."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_scrape_shows_jobs_queue_and_latencies(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxbot.jobs")
    bot = await world.restart_bot(
        metrics_port=0, max_concurrent_jobs=1, shutdown_grace_seconds=0.05
    )
    assert bot.metrics_server is not None
    port = bot.metrics_server.port  # any free loopback port (METRICS_PORT=0)

    done_card = await world.card_of(await world.imagine("a finished one"))
    await world.card_status(done_card, "✅ Done")
    world.api.latency = 30  # holds the only slot
    await world.card_of(await world.imagine("keeps the slot busy", user=world.bob))
    await world.api.wait_for_calls(2)
    waiting_card = await world.card_of(await world.imagine("changed my mind"))
    await world.card_status(waiting_card, "⏳ Queued — you're next")

    busy = await scrape(port)

    model = {"model": DEFAULT_MODEL}
    assert value(busy, "fluxbot_jobs_total", outcome="done", **model) == 1
    assert value(busy, "fluxbot_queue_depth") == 1
    assert value(busy, "fluxbot_jobs_running") == 1
    assert value(busy, "fluxbot_api_latency_seconds_count", result="ok", **model) == 1
    assert value(busy, "fluxbot_api_latency_seconds_sum", result="ok", **model) > 0
    assert value(busy, "fluxbot_ack_latency_seconds_count") == 3  # three commands answered
    assert value(busy, "fluxbot_ack_latency_seconds_bucket", le="3.0") == 3

    cancel = card_button(world, waiting_card, "cancel")
    assert cancel is not None
    pressed = await world.discord.click(world.channel, waiting_card, cancel, user_id=world.alice)
    await pressed.response()
    await world.card_status(waiting_card, "🚫 Cancelled")

    after = await scrape(port)

    assert value(after, "fluxbot_jobs_total", outcome="cancelled", **model) == 1
    assert value(after, "fluxbot_queue_depth") == 0
    assert value(after, "fluxbot_ack_latency_seconds_count") == 4  # and the Cancel press
    lines = [r.getMessage() for r in caplog.records if r.name == "fluxbot.jobs"]
    assert len(lines) == 2
    assert lines[0].startswith("job id=1 outcome=done")
    assert (
        f"model={DEFAULT_MODEL} kind=imagine member={world.alice} guild={world.guild}" in (lines[0])
    )
    assert "waited_s=" in lines[0] and "api_s=" in lines[0] and "total_s=" in lines[0]
    assert lines[1].startswith("job id=3 outcome=cancelled")


async def test_no_metrics_server_without_metrics_port(world: World) -> None:
    assert world.bot is not None and world.bot.metrics_server is None
