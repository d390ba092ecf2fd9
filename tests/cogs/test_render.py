"""Properties: any member text stays inside Discord's limits, and any option values are either
accepted in range or refused with words, never with another exception."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cogs import _render as render
from cogs.history import history_embed
from services.aimlapi import GeneratedImage, GenerationResult
from services.images import EncodedFile
from services.model_registry import (
    DEFAULT_MODEL,
    DREAMINA_UPSCALE,
    ENTRIES,
    FLUX2_EDIT,
    KONTEXT_PRO,
)
from services.parameters import PROMPT_MAX, SEED_MAX, GenerationParameters, describe_invalid
from services.store import Generation, GenerationKind, GenerationStatus

T0 = datetime(2025, 1, 1, tzinfo=UTC)

#: Text that breaks naive code: markdown, mentions, escapes, emoji (astral and joined),
#: zero-width and bidi controls, combining marks, surrogates-adjacent and control characters.
hostile_pieces = st.one_of(
    st.sampled_from(list("*_~`|>#-\\@<>:[]()\n\t \u200b\u200d\u202e\ufe0f\u0301\x00\x1b")),
    st.sampled_from(["😀", "👩\u200d👩\u200d👧", "🏳️\u200d🌈", "ﷺ", "𒐫", "\U0010fffd", "<@&1>"]),
    st.characters(codec="utf-8"),
)


def hostile_text(min_size: int = 0, max_size: int = PROMPT_MAX) -> st.SearchStrategy[str]:
    pieces = st.lists(hostile_pieces, min_size=min_size, max_size=max_size)
    return pieces.map(lambda parts: "".join(parts)[:max_size])


prompts = hostile_text(1) | st.sampled_from(
    ["😀" * PROMPT_MAX, "*" * PROMPT_MAX, "\\" * PROMPT_MAX, "@everyone " * 400, "`" * PROMPT_MAX]
)
statuses = st.sampled_from(list(GenerationStatus))


def generation(prompt: str, status: GenerationStatus, error: str | None) -> Generation:
    return Generation(
        id=2**53,
        parent_id=None,
        kind=GenerationKind.IMAGINE,
        user_id=2**63 - 1,
        guild_id=2**63 - 1,
        channel_id=2**63 - 1,
        thread_id=None,
        card_channel_id=None,
        card_message_id=None,
        model=DEFAULT_MODEL,
        # Unvalidated, as old rows are read: the prompt may be anything stored.
        parameters=GenerationParameters.model_construct(
            prompt=prompt,
            strength=0.123456789,
            seed=SEED_MAX,
            steps=50,
            guidance=19.999999,
            count=4,
            safety_checker=True,
        ),
        seed=SEED_MAX,
        reference_url="https://cdn.example/ref.png",
        status=status,
        error=error,
        created_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(days=400),
        inference_seconds=1e9,
    )


def assert_within_limits(embed: discord.Embed) -> None:
    data: dict[str, Any] = embed.to_dict()
    assert len(data.get("title", "")) <= 256
    assert len(data.get("description", "")) <= 4096
    fields = data.get("fields", [])
    assert len(fields) <= 25
    for field in fields:
        assert 1 <= len(field["name"]) <= 256
        assert 1 <= len(field["value"]) <= 1024
    assert len(data.get("footer", {}).get("text", "")) <= 2048
    assert len(embed) <= 6000


@settings(max_examples=40, deadline=None)
@given(prompt=prompts, status=statuses, error=st.none() | hostile_text(max_size=3000))
def test_every_embed_fits_for_any_prompt(prompt: str, status: GenerationStatus, error: str | None):
    stored = generation(prompt, status, error)
    result = GenerationResult(
        images=[GeneratedImage(url="https://cdn.example/x.png")] * 4,
        seed=SEED_MAX,
        inference_seconds=1e9,
    )
    varied = stored.model_copy(
        update={
            "kind": GenerationKind.VARY,
            "parent_id": 2**53,
            "source_id": 2**53,
            "source_image": 3,
            "thread_id": 2**63 - 1,
            "card_channel_id": 2**63 - 1,
            "card_message_id": 2**63 - 1,
            "result_message_ids": (2**63 - 1,),
            "cancelled_by": 2**63 - 1,
        }
    )
    for embed in (
        render.card_embed(stored, ahead=10**6),
        render.result_embed(stored, result, image_filename="fluxbot-1-1.png"),
        render.result_embed(varied, result, image_filename=None, source=varied),
        render.info_embed(stored, None),
        render.info_embed(varied, varied),
        history_embed([stored, varied] * 5, page=10**5, total=10**7),
        render.pending_card_embed(prompt, stored.user_id),
        render.rejected_card_embed(prompt, stored.user_id, error or "x"),
    ):
        assert_within_limits(embed)
    assert len(render.failure_text(error or prompt)) <= 2000
    # Every model's jobs, with three references and a note on each of four re-encoded files.
    fitted = EncodedFile(b"x" * 10**7, "fluxbot-1-1.webp", "image/webp", 16383, 16383, True)
    notes = [render.reencoded_note(n, 10**9, fitted, 10**8) for n in range(1, 5)]
    for entry in ENTRIES:
        edited = varied.model_copy(
            update={"model": entry.id, "extra_reference_urls": ("https://x/2", "https://x/3")}
        )
        for embed in (
            render.card_embed(edited, ahead=10**6),
            render.result_embed(edited, result, image_filename=None, source=edited, notes=notes),
            render.info_embed(edited, edited),
        ):
            assert_within_limits(embed)


def test_each_model_shows_only_what_it_reads():
    stored = generation("a cat", GenerationStatus.DONE, None)
    result = GenerationResult(images=[GeneratedImage(url="https://cdn.example/x.png")], seed=7)

    def shown(model: str) -> list[str]:
        embed = render.result_embed(
            stored.model_copy(update={"model": model}), result, image_filename=None
        )
        return [field.name for field in embed.fields]

    assert shown(DEFAULT_MODEL)[:5] == ["Seed", "Strength", "Steps", "Guidance", "Images"]
    assert shown(KONTEXT_PRO)[:5] == ["Model", "Seed", "Guidance", "Aspect ratio", "Images"]
    assert shown(FLUX2_EDIT)[:4] == ["Model", "Seed", "Steps", "Guidance"]
    assert shown(DREAMINA_UPSCALE)[:3] == ["Model", "Resolution", "Detail"]
    assert "Strength" not in shown(DREAMINA_UPSCALE) and "Seed" not in shown(DREAMINA_UPSCALE)


@settings(max_examples=60, deadline=None)
@given(prompt=prompts)
def test_thread_name_is_1_to_100_characters_on_one_line(prompt: str):
    name = render.thread_name(prompt)
    assert 1 <= len(name) <= 100
    assert "\n" not in name


@settings(max_examples=60, deadline=None)
@given(prompt=hostile_text(max_size=PROMPT_MAX + 5))
def test_a_prompt_is_cleaned_or_refused_with_words(prompt: str):
    try:
        parameters = GenerationParameters(prompt=prompt)
    except ValidationError as exc:
        assert describe_invalid(exc).startswith("Prompt ")
        return
    cleaned = parameters.prompt
    assert 1 <= len(cleaned) <= PROMPT_MAX
    assert cleaned == cleaned.strip()
    assert not any(ch in cleaned for ch in "\x00\x1b\u200b\u200d\u202e")


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),  # what a modal sends: "abc", "1e3", "½", " 7 ", "0x10"...
    st.sampled_from(["nan", "inf", "-0", "1_0", "٣", "1e400", "28.0", "", " "]),
)
RANGES = {
    "strength": (0.01, 1.0),
    "seed": (1, SEED_MAX),
    "steps": (1, 50),
    "guidance": (1.0, 20.0),
    "count": (1, 4),
}


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(sorted(RANGES)), value=numbers)
def test_option_values_are_accepted_in_range_or_refused_with_words(field: str, value: Any):
    try:
        parameters = GenerationParameters(prompt="a cat", **{field: value})
    except ValidationError as exc:
        message = describe_invalid(exc)
        assert message.startswith(field.capitalize())
        assert "Traceback" not in message and len(message) < 200
        return
    accepted = getattr(parameters, field)
    low, high = RANGES[field]
    assert isinstance(accepted, int | float) and not isinstance(accepted, bool)
    assert math.isfinite(accepted) and low <= accepted <= high
