"""The fake AI/ML API: ``async with FakeAimlApi(api_key=...) as api`` serves on loopback.

:mod:`.server` is the HTTP side (routes, scripted faults, reference fetching), :mod:`.schemas`
each model's documented request schema, :mod:`.responses` the documented answer shapes.
"""

from tests.fakes.aimlapi.responses import DEFAULT_MESSAGES, PATH
from tests.fakes.aimlapi.schemas import SCHEMAS, SEED_MAX, ResponseShape, Schema
from tests.fakes.aimlapi.server import (
    DEFAULT_MODEL,
    REFERENCE_MAX_BYTES,
    CallTiming,
    FakeAimlApi,
    NsfwRule,
    ReceivedRequest,
)

__all__ = [
    "DEFAULT_MESSAGES",
    "DEFAULT_MODEL",
    "PATH",
    "REFERENCE_MAX_BYTES",
    "SCHEMAS",
    "SEED_MAX",
    "CallTiming",
    "FakeAimlApi",
    "NsfwRule",
    "ReceivedRequest",
    "ResponseShape",
    "Schema",
]
