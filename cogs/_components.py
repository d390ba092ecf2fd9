"""Buttons, the Remix form and the views that carry them: stateless, keyed by a stored generation.

A custom id is ``fluxbot:<action>:<generation_id>[:<image index>]`` (DESIGN §2, §8);
``cogs/buttons.py`` registers the classes with ``add_dynamic_items``, so a button from any earlier
run still finds its generation in the store. The Remix form is answered by custom id too
(``handle_remix_submit``), so a form opened before a restart still works after it. Each press
calls one ``GenerationService`` method. The result message's other actions (Info, Delete, the
per-image ones) and the view that lays them out are in ``cogs/_result_actions.py``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import discord

from cogs._render import NO_MENTIONS
from cogs._replies import UNEXPECTED, reply
from services.errors import UserFacingError
from services.jobs import QUEUED_FOR_RESTART
from services.model_access import check_model
from services.model_registry import REGISTRY, model_entry
from services.parameters import (
    ASPECT_RATIO,
    DETAIL,
    GUIDANCE,
    PROMPT,
    RESOLUTION,
    SEED,
    STEPS,
    STRENGTH,
    ChoiceSpec,
    GenerationParameters,
    NumberSpec,
    parse_parameters,
)
from services.safety import check_prompt
from services.store import Generation, GenerationKind, GenerationStatus

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

MODAL_PREFIX = "fluxbot:remix-modal:"
#: ``:<n>`` after the id: the form of Use as input, whose reference is result image ``n``.
MODAL_ID = re.compile(
    r"fluxbot:remix-modal:(?P<id>[0-9]{1,20})(?::(?P<image>[0-9]{1,2}))?:[0-9a-f]{8}"
)
GONE = "I can't find this image in my records any more. Start again with /imagine."
DELETED = "This image was deleted, so its buttons no longer work."
NO_SUCH_IMAGE = "That image is not part of this result."
ONLY_AUTHOR = "Only the member who asked for this image can use its buttons."
#: How the private acknowledgement of a new job starts, by kind.
STARTED = {
    GenerationKind.REROLL: "🎲",
    GenerationKind.REMIX: "✏️",
    GenerationKind.VARY: "🌱",
    GenerationKind.USE: "🖼️",
    GenerationKind.EDIT_IMAGE: "✨",
    GenerationKind.UPSCALE: "🔍",
}
#: The form's fields after the prompt, in order, each only for a model that reads it (a modal
#: holds at most five inputs: FLUX.1 [dev] fills them with the prompt and these first four).
REMIX_KNOBS: tuple[NumberSpec | ChoiceSpec, ...] = (
    STRENGTH,
    SEED,
    STEPS,
    GUIDANCE,
    ASPECT_RATIO,
    RESOLUTION,
    DETAIL,
)
MAX_MODAL_INPUTS = 5
#: Room for any value in range (a ten-digit seed, ``0.123456789``).
MAX_NUMBER_LENGTH = 12


def may_control(
    interaction: Interaction, generation: Generation, *, open_to_all: bool = False
) -> bool:
    """The member who asked, a member who may manage messages here, or anyone if opened."""
    if interaction.user.id == generation.user_id:
        return True
    if interaction.guild is None:
        return False
    return open_to_all or interaction.permissions.manage_messages


async def opens_to_all(interaction: Interaction) -> bool:
    """Whether this guild lets anyone press Reroll and Remix (``/fluxbot-settings``)."""
    if interaction.guild_id is None:
        return False
    settings = await interaction.client.store.guild_settings.get(interaction.guild_id)
    return settings.open_rerolls


async def pressable(
    interaction: Interaction,
    generation_id: int,
    *,
    refusal: str = ONLY_AUTHOR,
    opens_with_guild: bool = True,
) -> Generation | None:
    """The generation a press names, or ``None`` once the member was told why not."""
    generation = await interaction.client.store.generations.get(generation_id)
    if generation is None:
        await reply(interaction, GONE)
        return None
    if generation.deleted_at is not None:
        await reply(interaction, DELETED)
        return None
    open_to_all = opens_with_guild and await opens_to_all(interaction)
    if not may_control(interaction, generation, open_to_all=open_to_all):
        await reply(interaction, refusal)
        return None
    return generation


class GenerationButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """Shared parsing and the author check; subclasses set ``action`` and ``press``."""

    action = ""
    refusal = ONLY_AUTHOR
    label = ""
    emoji = ""
    style = discord.ButtonStyle.secondary
    #: Whether the guild's "open rerolls" setting lets anyone press it (never for Cancel).
    opens_with_guild = True

    def __init__(self, generation_id: int, *, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"fluxbot:{self.action}:{generation_id}",
                label=self.label,
                emoji=self.emoji,
                style=self.style,
                row=row,
            )
        )
        self.generation_id = generation_id
        self.generation: Generation | None = None

    # discord.py types these overrides for any client; the typed work is in ``allowed``/``press``.
    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> GenerationButton:
        return cls(int(match["id"]))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await self.allowed(interaction)

    async def allowed(self, interaction: Interaction) -> bool:
        self.generation = await pressable(
            interaction,
            self.generation_id,
            refusal=self.refusal,
            opens_with_guild=self.opens_with_guild,
        )
        return self.generation is not None

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        assert self.generation is not None  # set by interaction_check
        try:
            await self.press(interaction, self.generation)
        except Exception:
            log.exception("button %s:%s failed", self.action, self.generation_id)
            await reply(interaction, UNEXPECTED)

    async def press(self, interaction: Interaction, generation: Generation) -> None:
        raise NotImplementedError


class RerollButton(GenerationButton, template=r"fluxbot:reroll:(?P<id>[0-9]{1,20})"):
    action = "reroll"
    label = "Reroll"
    emoji = "🎲"
    style = discord.ButtonStyle.primary

    async def press(self, interaction: Interaction, generation: Generation) -> None:
        # A failed job is retried as it was; a finished one gets a fresh random seed.
        seed = generation.parameters.seed if generation.status is GenerationStatus.FAILED else None
        parameters = generation.parameters.model_copy(update={"seed": seed})
        await start_follow_up(interaction, generation, parameters, kind=GenerationKind.REROLL)


class RemixButton(GenerationButton, template=r"fluxbot:remix:(?P<id>[0-9]{1,20})"):
    action = "remix"
    label = "Remix"
    emoji = "✏️"

    async def press(self, interaction: Interaction, generation: Generation) -> None:
        await interaction.response.send_modal(RemixModal(generation))


class CancelButton(GenerationButton, template=r"fluxbot:cancel:(?P<id>[0-9]{1,20})"):
    action = "cancel"
    opens_with_guild = False
    refusal = "Only the member who asked for this image can cancel it."
    label = "Cancel"
    emoji = "❌"
    style = discord.ButtonStyle.danger

    async def press(self, interaction: Interaction, generation: Generation) -> None:
        if not await interaction.client.generations.cancel(generation, by=interaction.user.id):
            await reply(interaction, "This image has already started, so it can't be cancelled.")
            return
        await interaction.response.defer()


BUTTONS: tuple[type[GenerationButton], ...] = (RerollButton, RemixButton, CancelButton)


def remix_knobs(model: str) -> tuple[NumberSpec | ChoiceSpec, ...]:
    """The Remix form's fields after the prompt: what the generation's own model reads."""
    entry = REGISTRY.get(model)
    reads = entry.reads if entry is not None else (PROMPT.name, SEED.name)
    room = MAX_MODAL_INPUTS - (PROMPT.name in reads)
    return tuple(spec for spec in REMIX_KNOBS if spec.name in reads)[:room]


def takes_prompt(model: str) -> bool:
    entry = REGISTRY.get(model)
    return entry is None or PROMPT.name in entry.reads


class RemixModal(discord.ui.Modal):
    """Pre-filled with the generation's settings; answered by ``handle_remix_submit``.

    With ``image`` it is Use as input: the same form, with that result image as the reference.
    Its fields are those the generation's model reads (an upscale has no prompt).
    """

    def __init__(self, generation: Generation, *, image: int | None = None) -> None:
        target = f"{generation.id}" if image is None else f"{generation.id}:{image}"
        super().__init__(
            title="Remix this image" if image is None else f"Remix with image {image + 1}",
            custom_id=f"{MODAL_PREFIX}{target}:{secrets.token_hex(4)}",
            timeout=15 * 60,
        )
        parameters = generation.parameters
        if takes_prompt(generation.model):
            self.add_item(
                discord.ui.TextInput(
                    custom_id=PROMPT.name,
                    label=PROMPT.label,
                    default=parameters.prompt,
                    style=discord.TextStyle.paragraph,
                    max_length=PROMPT.max_length,
                )
            )
        shown = parameters.model_dump() | {SEED.name: generation.seed or parameters.seed}
        for spec in remix_knobs(generation.model):
            self.add_item(_knob_input(spec, shown[spec.name]))


def _knob_input(spec: NumberSpec | ChoiceSpec, value: object) -> discord.ui.TextInput[Any]:
    """One knob of the Remix form, pre-filled with ``value``."""
    if isinstance(spec, ChoiceSpec):
        return discord.ui.TextInput(
            custom_id=spec.name,
            label=spec.label,
            placeholder=spec.choices_text[:100],
            default=str(value),
            max_length=max(len(choice) for choice in spec.choices),
        )
    label = f"{spec.label} ({spec.range_text})"
    if spec is SEED:
        label = "Seed (keep it, or clear for a random one)"
    number = value if isinstance(value, int | float) else None
    return discord.ui.TextInput(
        custom_id=spec.name,
        label=label,
        default=spec.show(number),
        required=spec is not SEED,
        max_length=MAX_NUMBER_LENGTH,
    )


def modal_values(components: list[dict[str, Any]]) -> dict[str, str]:
    """Text input values by custom id, from action rows or label components alike."""
    values: dict[str, str] = {}
    for component in components:
        if "value" in component and "custom_id" in component:
            values[component["custom_id"]] = str(component["value"])
        children = component.get("components") or []
        if "component" in component:
            children = [*children, component["component"]]
        values.update(modal_values(children))
    return values


async def handle_remix_submit(
    interaction: Interaction, generation_id: int, *, image: int | None = None
) -> None:
    """A submitted Remix form: the same checks as the button, then a new job in the thread.

    ``image``: the form of Use as input, whose reference is that image of the result.
    """
    source = await pressable(interaction, generation_id)
    if source is None:
        return
    if image is not None and image >= source.parameters.count:
        await reply(interaction, NO_SUCH_IMAGE)
        return
    data = cast(dict[str, Any], interaction.data or {})
    values = modal_values(list(data.get("components", [])))
    fields = [spec.name for spec in remix_knobs(source.model)]
    if takes_prompt(source.model):
        fields.insert(0, PROMPT.name)
    typed: dict[str, object] = {name: values.get(name, "").strip() for name in fields}
    if typed.get(SEED.name) == "":
        typed[SEED.name] = None  # cleared: a new random seed
    try:
        # What the form does not show stays as it was (count, the safety checker...).
        parameters = parse_parameters(**(source.parameters.model_dump() | typed))
        if interaction.guild_id is not None:
            settings = await interaction.client.store.guild_settings.get(interaction.guild_id)
            check_prompt(parameters.prompt, settings)
    except UserFacingError as exc:
        again = "Remix" if image is None else "Use as input"
        await reply(interaction, f"{exc.user_message} Press {again} to try again.")
        return
    kind = GenerationKind.REMIX if image is None else GenerationKind.USE
    await start_follow_up(interaction, source, parameters, kind=kind, image=image)


async def start_follow_up(
    interaction: Interaction,
    source: Generation,
    parameters: GenerationParameters,
    *,
    kind: GenerationKind,
    image: int | None = None,
    model: str | None = None,
) -> None:
    """Queue a follow-up of ``source`` in the same thread and acknowledge the press.

    ``image``: the new job's reference is that image of ``source``'s result (Vary, Use as input,
    Edit, Upscale). ``model``: another model than ``source``'s own (Vary, Edit, Upscale).
    """
    generations = interaction.client.generations
    follow_up = source.follow_up(
        kind=kind, user_id=interaction.user.id, parameters=parameters, image=image, model=model
    )
    try:
        await check_follow_up(interaction, follow_up.model, parameters, follow_up.references)
        await generations.admit(
            interaction.user.id,
            interaction.guild_id,
            model=follow_up.model,
            count=parameters.count,
        )
        await interaction.response.defer()
        submitted = await generations.submit(follow_up)
    except UserFacingError as exc:  # refused up front, or another press got there first
        await reply(interaction, exc.user_message)
        return
    where = (
        "here"
        if interaction.channel_id == (source.thread_id or source.channel_id)
        else "in the thread"
    )
    queued = f", {submitted.ahead} ahead of you" if submitted.ahead else ""
    text = f"{STARTED.get(kind, '✏️')} On it{queued} — the result will appear {where}."
    if generations.stopping:
        text = f"{QUEUED_FOR_RESTART} The result will appear {where}."
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    log.info(
        "generation %s: %s of %s by %s",
        submitted.generation.id,
        kind,
        source.id,
        interaction.user.id,
    )


async def check_follow_up(
    interaction: Interaction,
    model: str,
    parameters: GenerationParameters,
    references: Sequence[str],
) -> None:
    """Before answering: the guild allows the model, and the model takes the job (plain words).

    The references are only counted here; a file over a model's limits is fitted or refused
    when the job runs, where its bytes are at hand.
    """
    bot = interaction.client
    guild_id = interaction.guild_id
    settings = await bot.store.guild_settings.get(guild_id) if guild_id is not None else None
    check_model(model, settings, bot.settings.enabled_models)
    model_entry(model).validate(parameters, references)


def card_view(generation: Generation) -> discord.ui.View | None:
    """Cancel is offered only while the job waits: a running job is already being paid for."""
    if generation.status is not GenerationStatus.QUEUED:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(generation.id))
    return view
