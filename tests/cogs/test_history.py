"""/history end to end: a member's own generations, newest first, paged, across a restart."""

from __future__ import annotations

from typing import Any

from tests.services.store.records import mark_running, new
from tests.world import World


def lines(data: dict[str, Any]) -> list[str]:
    return data["embeds"][0]["description"].split("\n")


def buttons(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["label"]: c for row in data.get("components", []) for c in row["components"]}


async def history(world: World, user: int) -> Any:
    return await world.discord.invoke_command("history", {}, user_id=user, channel_id=world.channel)


async def page_to(world: World, opened: Any, data: dict[str, Any], label: str, user: int) -> Any:
    return await world.discord.click(
        world.channel,
        int(opened.original_message_id),
        buttons(data)[label]["custom_id"],
        user_id=user,
    )


async def test_paging_through_a_members_own_images_across_a_restart(world: World):
    assert world.bot is not None
    generations = world.bot.store.generations
    world.bot.generations.queue.pause()  # these jobs are made finished: the bot must not claim them
    made = [
        await generations.create(
            new(prompt=f"picture {n}", user_id=world.alice, channel_id=world.channel, seed=n + 1)
        )
        for n in range(23)
    ]
    made.append(await generations.create(new(prompt="bob's picture", user_id=world.bob)))
    for generation in made:  # finished, so the restart below resumes none of them
        await mark_running(world.bot.store, generation.id)
        await generations.mark_done(
            generation.id, seed=None, result_message_ids=[], inference_seconds=1.0
        )
    await generations.mark_deleted(made[20].id, deleted_by=world.alice)

    opened = await history(world, world.alice)
    first = (await opened.response())["data"]
    assert opened.ephemeral
    assert len(lines(first)) == 10
    assert lines(first)[0].startswith(
        "**1.** picture 22 · seed 23 · `flux/dev/image-to-image` · <t:"
    )
    assert "picture 20" not in first["embeds"][0]["description"]  # deleted
    assert first["embeds"][0]["footer"]["text"] == "Page 1 of 3 · 22 in all, newest first"
    assert buttons(first)["Newer"].get("disabled") is True

    older = await page_to(world, opened, first, "Older", world.alice)
    second = (await older.response())["data"]
    assert (await older.response())["type"] == 7  # the same message, edited
    assert lines(second)[0].startswith("**11.** picture 11 ·")

    await world.restart_bot()
    oldest = await page_to(world, opened, second, "Older", world.alice)
    third = (await oldest.response())["data"]
    assert [line.split(" · ")[0] for line in lines(third)] == [
        "**21.** picture 1",
        "**22.** picture 0",
    ]
    assert buttons(third)["Older"].get("disabled") is True
    newer = await page_to(world, opened, third, "Newer", world.alice)
    assert lines((await newer.response())["data"])[0].startswith("**11.**")
    assert "bob's picture" not in str([first, second, third])


async def test_a_result_links_to_its_message_and_a_deleted_one_is_left_out(world: World):
    card_id = await world.card_of(await world.imagine("a lighthouse at dusk"))
    result = await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")

    listed = (await (await history(world, world.alice)).response())["data"]
    [line] = lines(listed)
    link = f"https://discord.com/channels/{world.guild}/{card_id}/{result['id']}"
    assert line.startswith("**1.** a lighthouse at dusk · seed ") and line.endswith(
        f"[jump]({link})"
    )
    assert "components" not in listed or not listed["components"]  # one page: no buttons

    delete = next(
        c["custom_id"]
        for row in result["components"]
        for c in row["components"]
        if c["custom_id"].startswith("fluxbot:delete:")
    )
    deleting = await world.discord.click(card_id, int(result["id"]), delete, user_id=world.alice)
    await world.discord.wait_for(lambda _: deleting.followup_ids)
    empty = await history(world, world.alice)
    response = await empty.response()
    assert empty.ephemeral and "haven't made any images yet" in response["data"]["content"]


async def test_someone_elses_page_button_is_refused(world: World):
    assert world.bot is not None
    for n in range(11):
        await world.bot.store.generations.create(new(prompt=f"p{n}", user_id=world.alice))
    opened = await history(world, world.alice)
    first = (await opened.response())["data"]
    refused = await page_to(world, opened, first, "Older", world.bob)
    response = await refused.response()
    assert refused.ephemeral and "belongs to someone else" in response["data"]["content"]
