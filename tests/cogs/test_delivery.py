"""Upload fit: results (and the re-hosted reference) are re-encoded to the limit the interaction
reported; a file Discord still refuses is explained in the thread."""

from __future__ import annotations

from typing import Any

from tests import images
from tests.world import World

LIMIT = 2000  # bytes: a 1000×1000 PNG (~5 kB) does not fit, its WebP does


def small_guild(world: World) -> tuple[int, int, int]:
    guild = world.discord.add_guild("Tiny uploads", filesize_limit=LIMIT)
    return guild, world.discord.add_text_channel(guild, "art"), world.discord.add_member(guild, "z")


async def test_a_result_over_the_channel_limit_is_reencoded_to_fit(world: World):
    _, channel, member = small_guild(world)
    attachment = world.upload(images.png(1000, 1000), channel=channel)
    assert attachment["size"] > LIMIT
    interaction = await world.imagine(user=member, channel=channel, attachment=attachment)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    result = await world.result_in(card_id)
    card = await world.card_status(card_id, "✅ Done")

    [file] = result["attachments"]
    assert file["size"] <= LIMIT and not file["filename"].endswith(".png")
    assert f"/{file['filename']}?" in result["embeds"][0]["image"]["url"]
    assert card["attachments"][0]["size"] <= LIMIT  # the reference fitted too
    assert world.discord.rejections == []


async def test_a_limit_that_shrank_meanwhile_is_explained_in_the_thread(world: World):
    guild, channel, member = small_guild(world)

    def boost_ends(params: dict[str, Any], index: int) -> bool:
        world.discord.guilds[guild]["filesize_limit"] = 100  # while the job runs
        return False

    world.api.nsfw = boost_ends
    interaction = await world.imagine(user=member, channel=channel)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    failure = await world.result_in(card_id)

    assert failure["content"].startswith("❌") and "too large" in failure["content"]
    assert failure["components"], "Reroll stays available"
    assert [r["status"] for r in world.discord.rejections] == [413]
