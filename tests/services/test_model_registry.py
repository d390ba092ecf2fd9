"""The model registry: every entry's body against its schemas, plain refusals, aspect ratios."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.model_registry import (
    ASPECT_RATIOS,
    DEFAULT_EDIT_MODEL,
    DEFAULT_MODEL,
    DEFAULT_UPSCALE_MODEL,
    DREAMINA_UPSCALE,
    ENTRIES,
    FLUX2_EDIT,
    KONTEXT_MAX,
    KONTEXT_PRO,
    REGISTRY,
    ModelEntry,
    ModelKind,
    ReferenceInfo,
    ReferenceNotMeasured,
    UnknownModel,
    model_entry,
    nearest_aspect_ratio,
)
from services.models.geometry import ratio_value
from services.parameters import (
    ASPECT_RATIO,
    GenerationParameters,
    InvalidParameters,
    parse_parameters,
)
from tests import images
from tests.fakes.aimlapi import SCHEMAS

URLS = tuple(f"https://cdn.example/ref-{n}.png" for n in range(5))
PHOTO = ReferenceInfo(1024, 768, byte_size=900_000, content_type="image/png")


def params(**knobs: Any) -> GenerationParameters:
    knobs.setdefault("prompt", "put a party hat on the cat")
    return GenerationParameters(**knobs)


def loose(**knobs: Any) -> GenerationParameters:
    """Parameters as a stored row may hold them: never validated (``ParametersJSON``)."""
    return GenerationParameters.model_construct(**(params().model_dump() | knobs))


def body(model: str, parameters: GenerationParameters | None = None, **options: Any) -> dict:
    options.setdefault("reference", PHOTO)
    references = options.pop("references", URLS[:1])
    return model_entry(model).request_body(parameters or params(), references, **options)


def refusal(model: str, parameters: GenerationParameters | None = None, **options: Any) -> str:
    with pytest.raises(InvalidParameters) as refused:
        body(model, parameters, **options)
    return refused.value.user_message


# --------------------------------------------------------------------------- every entry

#: Knob combinations each model must turn into a body both schemas accept.
VARIANTS = [
    {},
    {"seed": 1, "count": 4, "guidance": 20.0, "steps": 50, "strength": 0.01},
    {"seed": 4_294_967_295, "guidance": 1.0, "steps": 4, "safety_checker": False},
    {"aspect_ratio": "21:9", "resolution": "4k", "detail": 0, "prompt_expansion": True},
    {"aspect_ratio": "9:21", "detail": 100, "prompt": "x" * 4000},
]


def bodies(entry: ModelEntry) -> list[dict[str, Any]]:
    made = []
    for knobs, count in itertools.product(VARIANTS, range(1, entry.max_references + 1)):
        made.append(body(entry.id, params(**knobs), references=URLS[:count]))
    return made


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.id)
def test_every_body_fits_its_own_type_and_the_documented_schema(entry: ModelEntry) -> None:
    for made in bodies(entry):
        assert made["model"] == entry.id
        # Our pydantic body type forbids extras: what we send is exactly what it declares.
        assert entry.body_type.model_validate(made).model_dump(mode="json", exclude_none=True) == (
            made
        )
        # And the schema written from the API's documentation (the fake's) accepts it.
        assert SCHEMAS[entry.id].problems(made) == [], made


def test_the_registry_lists_the_documented_models_by_kind() -> None:
    kinds = {entry.id: entry.kind for entry in ENTRIES}
    assert kinds == {
        DEFAULT_MODEL: ModelKind.IMG2IMG,
        KONTEXT_PRO: ModelKind.EDIT,
        KONTEXT_MAX: ModelKind.EDIT,
        FLUX2_EDIT: ModelKind.EDIT,
        DREAMINA_UPSCALE: ModelKind.UPSCALE,
    }
    assert (DEFAULT_EDIT_MODEL, DEFAULT_UPSCALE_MODEL) == (KONTEXT_PRO, DREAMINA_UPSCALE)
    assert set(REGISTRY) <= set(SCHEMAS)
    with pytest.raises(UnknownModel, match="flux/nope"):
        model_entry("flux/nope")


def test_a_single_url_is_refused_as_a_list_of_characters() -> None:
    with pytest.raises(TypeError):
        model_entry(DEFAULT_MODEL).request_body(params(), URLS[0])


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.id)
def test_every_price_is_a_plain_positive_figure(entry: ModelEntry) -> None:
    assert 0 < entry.usd_per_image < 1
    expected = entry.usd_per_image * (1 if entry.kind is ModelKind.UPSCALE else 3)
    assert entry.estimate_usd(params(count=3)) == pytest.approx(expected)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("model", "given", "message"),
    [
        (DEFAULT_MODEL, 3, "FLUX.1 [dev] takes one reference image; you gave 3."),
        (KONTEXT_PRO, 5, "FLUX.1 Kontext [pro] takes at most 4 reference images; you gave 5."),
        (FLUX2_EDIT, 4, "FLUX.2 edit takes at most 3 reference images; you gave 4."),
        (DREAMINA_UPSCALE, 2, "Dreamina upscale takes one reference image; you gave 2."),
        (KONTEXT_MAX, 0, "FLUX.1 Kontext [max] needs a picture to work on."),
    ],
)
def test_reference_counts_are_refused_in_plain_words(model: str, given: int, message: str) -> None:
    assert refusal(model, references=URLS[:given]) == message


def test_prompts_are_checked_for_the_model() -> None:
    assert refusal(KONTEXT_PRO, loose(prompt="  ")) == (
        "FLUX.1 Kontext [pro] needs a prompt: say what you want."
    )
    assert refusal(FLUX2_EDIT, loose(prompt="y" * 4001)) == (
        "FLUX.2 edit takes prompts of at most 4000 characters; yours has 4001."
    )
    # The upscaler takes no prompt, so none is needed nor sent.
    assert "prompt" not in body(DREAMINA_UPSCALE, loose(prompt=""))


def test_flux2_needs_four_steps() -> None:
    assert refusal(FLUX2_EDIT, params(steps=2)) == (
        "FLUX.2 edit needs at least 4 steps; you chose 2."
    )


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            ReferenceInfo(800, 600, byte_size=10_000, content_type="image/webp"),
            "Dreamina upscale takes PNG or JPEG pictures; this one is WEBP.",
        ),
        (
            ReferenceInfo(2000, 2000, byte_size=6_100_000, content_type="image/png"),
            "Dreamina upscale takes files of at most 4.7 MB; this one is 6.1 MB.",
        ),
        (
            ReferenceInfo(5000, 3000, byte_size=4_000_000, content_type="image/jpeg"),
            "Dreamina upscale takes pictures of at most 4096×4096 pixels; this one is 5000×3000.",
        ),
    ],
)
def test_the_upscalers_file_limits(reference: ReferenceInfo, message: str) -> None:
    assert refusal(DREAMINA_UPSCALE, reference=reference) == message
    at_limit = ReferenceInfo(4096, 4096, byte_size=4_700_000, content_type="image/jpeg")
    assert body(DREAMINA_UPSCALE, reference=at_limit)["image_url"] == URLS[0]


def test_new_knobs_refuse_values_in_plain_words() -> None:
    with pytest.raises(InvalidParameters) as refused:
        parse_parameters(prompt="a cat", aspect_ratio="5:4")
    assert refused.value.user_message == (
        "Aspect ratio must be one of source, 21:9, 16:9, 4:3, 3:2, 1:1, 2:3, 3:4, 9:16, 9:21."
    )
    with pytest.raises(InvalidParameters) as refused:
        parse_parameters(prompt="a cat", detail=101)
    assert refused.value.user_message == "Detail must be between 0 and 100."


def test_json_stored_before_the_new_knobs_still_validates() -> None:
    old = {"prompt": "a cat", "strength": 0.5, "seed": None, "steps": 28, "guidance": 3.5}
    parsed = GenerationParameters.model_validate(old | {"count": 1, "safety_checker": True})
    assert (parsed.aspect_ratio, parsed.resolution, parsed.detail) == ("source", "2k", 50)
    assert parsed.prompt_expansion is False


# --------------------------------------------------------------------------- per model


def test_flux_dev_body_is_unchanged() -> None:
    made = body(DEFAULT_MODEL, params(seed=7, count=2, strength=0.6), reference=None)
    assert made == {
        "model": DEFAULT_MODEL,
        "prompt": "put a party hat on the cat",
        "image_url": URLS[0],
        "strength": 0.6,
        "guidance_scale": 3.5,
        "num_inference_steps": 28,
        "num_images": 2,
        "seed": 7,
        "enable_safety_checker": True,
    }
    assert not model_entry(DEFAULT_MODEL).needs_reference(params())


@pytest.mark.parametrize("model", [KONTEXT_PRO, KONTEXT_MAX])
def test_kontext_sends_what_it_documents_and_nothing_else(model: str) -> None:
    one = body(model, params(seed=9, count=3, guidance=5.0))
    assert one == {
        "model": model,
        "prompt": "put a party hat on the cat",
        "image_url": URLS[0],
        "aspect_ratio": "4:3",  # 1024×768, though the API's default is 16:9
        "safety_tolerance": "2",
        "output_format": "png",
        "num_images": 3,
        "seed": 9,
        "guidance_scale": 5.0,
    }
    several = body(model, params(safety_checker=False, aspect_ratio="9:16"), references=URLS[:4])
    assert several["image_url"] == list(URLS[:4])
    assert (several["aspect_ratio"], several["safety_tolerance"]) == ("9:16", "5")


def test_an_aspect_ratio_from_the_source_needs_the_reference() -> None:
    entry = model_entry(KONTEXT_PRO)
    assert entry.needs_reference(params())
    assert not entry.needs_reference(params(aspect_ratio="1:1"))
    with pytest.raises(ReferenceNotMeasured):
        body(KONTEXT_PRO, reference=None)
    assert body(KONTEXT_PRO, params(aspect_ratio="1:1"), reference=None)["aspect_ratio"] == "1:1"


def test_flux2_edit_sizes_the_result_like_the_reference() -> None:
    made = body(FLUX2_EDIT, references=URLS[:3])
    assert made["image_urls"] == list(URLS[:3])
    assert made["image_size"] == {"width": 1024, "height": 768}
    assert made["enable_prompt_expansion"] is False
    assert body(FLUX2_EDIT, params(prompt_expansion=True))["enable_prompt_expansion"] is True
    chosen = body(FLUX2_EDIT, params(aspect_ratio="16:9"), reference=None)["image_size"]
    assert chosen == {"width": 1376, "height": 768}


@given(
    width=st.integers(1, 8000),
    height=st.integers(1, 8000),
    ratio=st.sampled_from(ASPECT_RATIO.choices),
)
def test_flux2_sizes_are_always_documented_ones(width: int, height: int, ratio: str) -> None:
    reference = ReferenceInfo(width, height)
    size = body(FLUX2_EDIT, params(aspect_ratio=ratio), reference=reference)["image_size"]
    for side in size.values():
        assert 512 <= side <= 2048 and side % 32 == 0
    assert size["width"] * size["height"] <= 1.2 * 1024 * 1024 or min(size.values()) == 512
    target = width / height if ratio == "source" else ratio_value(ratio)
    if 0.5 <= target <= 2:  # within the side limits the shape is kept (to the 32-pixel grid)
        assert abs(math.log(size["width"] / size["height"]) - math.log(target)) < 0.08


def test_dreamina_sends_resolution_and_detail() -> None:
    made = body(DREAMINA_UPSCALE, params(resolution="4k", detail=20, count=4))
    assert made == {
        "model": DREAMINA_UPSCALE,
        "image_url": URLS[0],
        "resolution": "4k",
        "scale": 20,
    }
    assert model_entry(DREAMINA_UPSCALE).needs_reference(params())


# --------------------------------------------------------------------------- aspect ratios


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ((1920, 1080), "16:9"),
        ((1080, 1920), "9:16"),
        ((1000, 1000), "1:1"),
        ((1024, 768), "4:3"),
        ((768, 1024), "3:4"),
        ((1200, 800), "3:2"),
        ((800, 1200), "2:3"),
        ((2560, 1080), "21:9"),
        ((1080, 2560), "9:21"),
        ((5000, 100), "21:9"),
        ((100, 5000), "9:21"),
        ((1100, 1000), "1:1"),
    ],
)
def test_nearest_aspect_ratio(size: tuple[int, int], ratio: str) -> None:
    assert nearest_aspect_ratio(*size) == ratio


@given(width=st.integers(1, 10_000), height=st.integers(1, 10_000))
def test_no_listed_ratio_is_nearer(width: int, height: int) -> None:
    def distance(ratio: str) -> float:
        return abs(math.log(ratio_value(ratio)) - math.log(width / height))

    chosen = nearest_aspect_ratio(width, height)
    assert all(distance(chosen) <= distance(other) for other in ASPECT_RATIOS)


def test_reference_measured_from_its_header() -> None:
    assert ReferenceInfo.measure(images.png(300, 200)) == ReferenceInfo(
        300, 200, byte_size=len(images.png(300, 200)), content_type="image/png"
    )
    measured = ReferenceInfo.measure(images.jpeg(64, 120))
    assert measured is not None
    assert (measured.width, measured.height, measured.content_type) == (64, 120, "image/jpeg")
    assert ReferenceInfo.measure(b"not a picture") is None
