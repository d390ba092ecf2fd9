"""Each model's request schema as the AI/ML API documents it, checked the way the real API does.

Written from the published OpenAPI files (docs.aimlapi.com, ``aimlapi/api-docs``), not from our
registry, so a body our registry builds wrong fails here as it would there. Messages are
NestJS-style, one per broken field, like the real 400's ``message`` list; an unknown property is
refused ("property x should not exist"), which is stricter than the documentation says but is
what a whitelisting validator does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from yarl import URL

SEED_MAX = 2**32 - 1
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
SIZE_PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
ANY_IMAGE = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
ResponseShape = Literal["images", "data", "data_b64"]
#: A field's check: the problems with ``value`` (named ``key``), none when it is fine.
Check = Callable[[str, object], list[str]]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_http_uri(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.is_absolute() and url.scheme in ("http", "https") and bool(url.host)


def number(low: float, high: float, *, integer: bool = False) -> Check:
    kind = "an integer" if integer else "a number"

    def check(key: str, value: object) -> list[str]:
        typed = _is_int(value) if integer else _is_number(value)
        if typed and isinstance(value, int | float) and low <= value <= high:
            return []
        return [f"{key} must be {kind} between {low:g} and {high:g}"]

    return check


def one_of(*values: str) -> Check:
    def check(key: str, value: object) -> list[str]:
        if value in values:
            return []
        return [f"{key} must be one of the following values: {', '.join(values)}"]

    return check


def boolean(key: str, value: object) -> list[str]:
    return [] if isinstance(value, bool) else [f"{key} must be a boolean value"]


def text(max_length: int) -> Check:
    def check(key: str, value: object) -> list[str]:
        if isinstance(value, str) and 1 <= len(value) <= max_length:
            return []
        return [f"{key} must be a string of 1 to {max_length} characters"]

    return check


def uri(key: str, value: object) -> list[str]:
    return [] if is_http_uri(value) else [f"{key} must be an absolute http(s) URL"]


def uri_list(min_items: int, max_items: int) -> Check:
    def check(key: str, value: object) -> list[str]:
        if not isinstance(value, list):
            return [f"{key} must be an array"]
        problems = []
        if len(value) < min_items:
            problems.append(f"{key} must contain at least {min_items} elements")
        if len(value) > max_items:
            problems.append(f"{key} must contain no more than {max_items} elements")
        if not all(is_http_uri(item) for item in value):
            problems.append(f"each value in {key} must be an absolute http(s) URL")
        return problems

    return check


def uri_or_uris(max_items: int) -> Check:
    """Kontext's ``image_url``: one URI, or an array of at most ``max_items``."""
    many = uri_list(1, max_items)

    def check(key: str, value: object) -> list[str]:
        return many(key, value) if isinstance(value, list) else uri(key, value)

    return check


def image_size(minimum: int, maximum: int, step: int) -> Check:
    """A preset name or ``{"width", "height"}``, each side in range and a multiple of ``step``."""
    presets = one_of(*SIZE_PRESETS)

    def check(key: str, value: object) -> list[str]:
        if not isinstance(value, dict):
            return presets(key, value)
        unknown = sorted(value.keys() - {"width", "height"})
        problems = [f"property {key}.{name} should not exist" for name in unknown]
        for side in ("width", "height"):
            size = value.get(side)
            if not (isinstance(size, int) and _is_int(size) and minimum <= size <= maximum):
                problems.append(f"{key}.{side} must be an integer between {minimum} and {maximum}")
            elif size % step:
                problems.append(f"{key}.{side} must be a multiple of {step}")
        return problems

    return check


@dataclass(frozen=True)
class Schema:
    """One model's documented body, where its references are, and how it answers."""

    model: str
    fields: dict[str, Check]
    required: frozenset[str]
    #: The body keys holding reference URLs (a string or a list of them).
    reference_keys: tuple[str, ...]
    response: ResponseShape
    #: Files the model refuses, by what it documents: content types, bytes, longest side.
    reference_types: frozenset[str] = ANY_IMAGE
    reference_max_bytes: int = 25 * 1024 * 1024
    reference_max_side: int | None = None
    #: The ``output_format`` used when the body names none.
    output_format: str = "png"
    #: What ``meta.usage`` reports per image (data-shaped answers only), and whether in dollars.
    usd_per_image: float | None = None
    reports_usd: bool = False

    def problems(self, body: dict[str, Any]) -> list[str]:
        unknown = sorted(body.keys() - self.fields.keys())
        found = [f"property {key} should not exist" for key in unknown]
        found += [f"{key} should not be empty" for key in sorted(self.required - body.keys())]
        for key, check in self.fields.items():
            if key in body and key != "model":
                found += check(key, body[key])
        return found

    def references(self, body: dict[str, Any]) -> Iterator[str]:
        """Every reference URL of a valid body, in order."""
        for key in self.reference_keys:
            value = body.get(key)
            if isinstance(value, list):
                yield from value
            elif isinstance(value, str):
                yield value


FLUX_DEV = Schema(
    model="flux/dev/image-to-image",
    fields={
        "model": one_of("flux/dev/image-to-image"),
        "prompt": text(4000),
        "image_url": uri,
        "strength": number(0, 1),
        "guidance_scale": number(1, 20),
        "num_inference_steps": number(1, 50, integer=True),
        "num_images": number(1, 4, integer=True),
        "seed": number(1, SEED_MAX, integer=True),
        "enable_safety_checker": boolean,
    },
    required=frozenset({"model", "prompt", "image_url"}),
    reference_keys=("image_url",),
    response="images",
)


def _kontext(model: str) -> Schema:
    return Schema(
        model=model,
        fields={
            "model": one_of(model),
            "prompt": text(4000),
            "image_url": uri_or_uris(4),
            "aspect_ratio": one_of(*ASPECT_RATIOS),
            "safety_tolerance": one_of("1", "2", "3", "4", "5", "6"),
            "output_format": one_of("jpeg", "png"),
            "num_images": number(1, 4, integer=True),
            "seed": number(1, SEED_MAX, integer=True),
            "guidance_scale": number(1, 20),
        },
        required=frozenset({"model", "prompt", "image_url"}),
        reference_keys=("image_url",),
        response="images",
        output_format="jpeg",
    )


FLUX2_EDIT = Schema(
    model="blackforestlabs/flux-2-edit",
    fields={
        "model": one_of("blackforestlabs/flux-2-edit"),
        "prompt": text(4000),
        "image_urls": uri_list(1, 3),
        "image_size": image_size(512, 2048, 32),
        "output_format": one_of("jpeg", "png", "webp"),
        "enable_prompt_expansion": boolean,
        "guidance_scale": number(0, 20),
        "num_inference_steps": number(4, 50, integer=True),
        "acceleration": one_of("none", "regular", "high"),
        "seed": number(1, SEED_MAX, integer=True),
        "num_images": number(1, 4, integer=True),
        "enable_safety_checker": boolean,
    },
    required=frozenset({"model", "prompt", "image_urls"}),
    reference_keys=("image_urls",),
    response="data",
    usd_per_image=0.03,
)

DREAMINA_UPSCALE = Schema(
    model="bytedance/dreamina-creative-upscale",
    fields={
        "model": one_of("bytedance/dreamina-creative-upscale"),
        "image_url": uri,
        "resolution": one_of("2k", "4k"),
        "scale": number(0, 100, integer=True),
        "response_format": one_of("url", "b64_json"),
    },
    required=frozenset({"model", "image_url"}),
    reference_keys=("image_url",),
    response="data",
    reference_types=frozenset({"image/png", "image/jpeg"}),
    reference_max_bytes=4_700_000,
    reference_max_side=4096,
    usd_per_image=0.06,
    reports_usd=True,
)

SCHEMAS: dict[str, Schema] = {
    schema.model: schema
    for schema in (
        FLUX_DEV,
        _kontext("flux/kontext-pro/image-to-image"),
        _kontext("flux/kontext-max/image-to-image"),
        FLUX2_EDIT,
        DREAMINA_UPSCALE,
    )
}
