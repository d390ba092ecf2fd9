"""``/imagine``: check what the interaction carries, answer with a job card, then queue the job.

What happens once the checks pass (the card, the thread, the reference, the queue) is shared
with "Remix with fluxbot" in ``cogs/_intake.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs import _access as access
from cogs._intake import MAX_REFERENCE_BYTES, intake_for
from cogs._replies import reply
from services.errors import UserFacingError
from services.images import check_attachment_meta
from services.parameters import (
    COUNT,
    GUIDANCE,
    PROMPT,
    SEED,
    STEPS,
    STRENGTH,
    parse_parameters,
)

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]


class ImagineCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.intake = intake_for(bot)

    # Ranges and descriptions come from the parameter specs (services/parameters.py).
    @app_commands.command(name="imagine")
    # Guild installs only: a user-installed command would run where the bot is no member.
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.describe(
        image="The picture to remix (PNG, JPEG, WebP or GIF)",
        prompt=PROMPT.help,
        **{spec.name: spec.description for spec in (STRENGTH, SEED, STEPS, GUIDANCE, COUNT)},
    )
    async def imagine(
        self,
        interaction: Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, PROMPT.min_length, PROMPT.max_length],
        strength: app_commands.Range[float, STRENGTH.minimum, STRENGTH.maximum] | None = None,
        seed: app_commands.Range[int, int(SEED.minimum), int(SEED.maximum)] | None = None,
        steps: app_commands.Range[int, int(STEPS.minimum), int(STEPS.maximum)] | None = None,
        guidance: app_commands.Range[float, GUIDANCE.minimum, GUIDANCE.maximum] | None = None,
        count: app_commands.Range[int, int(COUNT.minimum), int(COUNT.maximum)] | None = None,
    ) -> None:
        """Remix an image with FLUX: attach a picture and describe what it should become."""
        if (refused := access.check(interaction)) is not None:
            await reply(interaction, refused)
            return
        options = {"strength": strength, "seed": seed, "steps": steps, "guidance": guidance}
        options["count"] = count
        try:
            parameters = parse_parameters(
                prompt=prompt, **{k: v for k, v in options.items() if v is not None}
            )
            parameters = await self.intake.apply_policy(interaction, parameters)
            check_attachment_meta(
                image.content_type, image.size, image.filename, max_bytes=MAX_REFERENCE_BYTES
            )
        except UserFacingError as exc:
            await reply(interaction, exc.user_message)
            return

        await self.intake.answer_with_card(interaction, parameters, image)


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(ImagineCog(bot))
