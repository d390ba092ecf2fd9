"""/fluxbot-stats: Manage Server only (checked on the server too); this server's spend against
its budgets, as text and a PNG chart drawn on the image pool."""

from __future__ import annotations

from typing import Any

from cogs.stats import describe_report
from services.costs import Spend, SpendReport
from tests.e2e.test_nsfw import admin, settings_command
from tests.fakes.discord import FakeInteraction
from tests.world import World

PNG = b"\x89PNG\r\n\x1a\n"


async def stats(world: World, user: int, **options: Any) -> FakeInteraction:
    return await world.discord.invoke_command(
        "fluxbot-stats", options, user_id=user, channel_id=world.channel
    )


async def answered(world: World, interaction: FakeInteraction) -> dict[str, Any]:
    """The private answer once the deferred "thinking" message was replaced."""
    await interaction.response()

    def done(fake: Any) -> dict[str, Any] | None:
        message = fake._messages.get(interaction.original_message_id)
        return None if message is None or message.loading else fake._render(message)

    return await world.discord.wait_for(done, timeout=15)


async def test_admins_see_this_servers_spend_with_a_chart(world: World):
    owner = admin(world)
    await settings_command(world, owner, daily_budget="1", member_daily_budget="0.5")
    for user in (world.alice, world.bob, world.alice):
        await world.card_status(await world.card_of(await world.imagine(user=user)), "✅ Done")

    interaction = await stats(world, owner, days=7)
    message = await answered(world, interaction)

    assert interaction.ephemeral
    content = message["content"]
    assert "Today: $0.0750 spent · budget $1.00 a day ($0.9250 left)" in content
    assert "Members: $0.5000 a day each" in content
    assert "7 days: $0.0750 on 3 API calls" in content
    assert "By model: flux/dev/image-to-image $0.0750" in content
    assert f"<@{world.alice}> $0.0500 · <@{world.bob}> $0.0250" in content
    assert "• Today: 3 jobs (3 done; flux/dev/image-to-image 3; command → result p50 " in content
    assert "• Last 7 days: 3 jobs (3 done;" in content
    assert "• Queue now (whole bot): 0 running, 0 waiting" in content
    [chart] = message["attachments"]
    assert chart["filename"] == "fluxbot-spend.png"
    assert world.discord.attachment_bytes(chart).startswith(PNG)


async def test_members_without_manage_server_are_refused_even_if_the_command_is_shown(
    world: World,
):
    command = next(c for c in world.discord.commands if c["name"] == "fluxbot-stats")
    assert int(command["default_member_permissions"]) == 1 << 5
    command["default_member_permissions"] = None

    interaction = await stats(world, world.bob)
    response = await interaction.response()

    assert interaction.ephemeral and "Manage Server" in response["data"]["content"]


def test_the_text_says_when_nothing_limits_spend_and_when_the_queue_is_paused():
    report = SpendReport(
        guild_id=1,
        days=[],
        daily=[],
        today=Spend(limit=None, spent=0, reserved=50_000_000),
        member_default=None,
        member_budgets={7: 10**9},
        by_model=[],
        by_member=[],
    )
    text = describe_report(report, paused=True)
    assert "$0.0500 reserved by waiting jobs · no daily budget" in text
    assert "Members: no limit each; their own: <@7> $1.00" in text
    assert "queue is paused" in text
