"""Upload fit: results are fitted to the upload limit of the place they go (its guild's boost tier);
a file Discord still refuses is explained in the thread."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tests import images
from tests.fakes import aimlapi
from tests.world import World

MIB = 1024 * 1024
#: Big enough that a result at this size is over 10 MiB as PNG (random pixels don't compress).
SIDE = 2000


@functools.cache
def _noise(width: int, height: int) -> bytes:
    return images.noise_png(width, height)


def _noise_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
    return [_noise(width, height)] * count


@pytest.fixture
def big_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake API answers with incompressible pictures: over 10 MiB as PNG at 2000²."""
    monkeypatch.setattr(aimlapi, "_solid_pngs", _noise_pngs)


async def test_a_result_over_the_guilds_limit_is_reencoded_to_fit(world: World, big_results: None):
    await world.restart_bot(max_input_megapixels=4.0)
    attachment = world.upload(images.png(SIDE, SIDE))
    interaction = await world.imagine(attachment=attachment)
    await interaction.response()
    result = await world.result_in(int(interaction.original_message["id"]))

    assert len(_noise(SIDE, SIDE)) > 10 * MIB
    [file] = result["attachments"]
    assert file["size"] <= 10 * MIB and not file["filename"].endswith(".png")
    assert f"/{file['filename']}?" in result["embeds"][0]["image"]["url"]
    assert world.discord.rejections == []


async def test_a_boost_that_ended_unannounced_is_explained_in_the_thread(
    world: World, big_results: None
):
    await world.restart_bot(max_input_megapixels=4.0)
    guild = world.discord.add_guild("Boosted", premium_tier=2)
    channel = world.discord.add_text_channel(guild, "art")
    member = world.discord.add_member(guild, "z")

    def boost_ends(params: dict[str, Any], index: int) -> bool:
        world.discord.set_premium_tier(guild, 0, announce=False)  # while the job runs
        return False

    world.api.nsfw = boost_ends
    attachment = world.upload(images.png(SIDE, SIDE), channel=channel)
    interaction = await world.imagine(user=member, channel=channel, attachment=attachment)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    failure = await world.result_in(card_id)

    assert failure["content"].startswith("❌") and "too large" in failure["content"]
    assert failure["components"], "Reroll stays available"
    assert [r["status"] for r in world.discord.rejections] == [413]
