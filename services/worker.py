"""Runs one queued generation from start to finish, talking to Discord only through a publisher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.aimlapi import (
    AimlApiClient,
    AimlApiError,
    GeneratedImage,
    GenerationResult,
    RateLimitedError,
)
from services.jobs import Job, RateLimited
from services.model_registry import ModelEntry
from services.store import Generation, Store

log = logging.getLogger(__name__)

#: Largest result image we accept from the API's CDN; FLUX PNGs at 1 MP are ~1–2 MiB.
MAX_RESULT_BYTES = 25 * 1024 * 1024
#: Told when the API stayed too busy (429) for a job's whole JOB_TIMEOUT_SECONDS.
BUSY_TOO_LONG = (
    "The image service stayed too busy to take this image for too long. Press Reroll to try again."
)


class ReferenceUnavailable(Exception):
    """The reference image can no longer be fetched (its card was deleted)."""

    user_message = (
        "The original image for this generation is gone (its message was deleted), "
        "so it can't be remixed. Start again with /imagine."
    )


class DeliveryFailed(Exception):
    """Discord refused the result (e.g. a permission was taken away while the job ran)."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ResultPublisher(Protocol):
    """What the worker needs from the Discord side; cogs implement it."""

    async def fresh_reference_url(self, generation: Generation) -> str: ...

    async def job_started(self, generation: Generation) -> None: ...

    async def job_succeeded(
        self, generation: Generation, result: GenerationResult, images: list[bytes]
    ) -> list[int]: ...

    async def job_failed(self, generation: Generation, reason: str) -> None: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class GenerationWorker:
    def __init__(
        self,
        *,
        store: Store,
        api: AimlApiClient,
        model: ModelEntry,
        publisher: ResultPublisher,
        job_timeout_seconds: float = 600.0,
        on_requeued: Callable[[Generation], None] | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        """``on_requeued`` hears of a job put back in line after a 429 (its card says queued)."""
        self._store = store
        self._api = api
        self._model = model
        self._publisher = publisher
        self._job_timeout = timedelta(seconds=job_timeout_seconds)
        self._on_requeued = on_requeued
        self._now = now

    async def __call__(self, job: Job) -> None:
        generation = await self._store.generations.mark_running(job.generation_id, self._now())
        if generation is None:
            log.info("generation %s: no longer waiting, skipped", job.generation_id)
            return
        started = time.monotonic()
        await self._publisher.job_started(generation)
        try:
            image_url = await self._publisher.fresh_reference_url(generation)
            body = self._model.request_body(generation.parameters, image_url)
            # 429s are the queue's business: it slows down as a whole (DESIGN §7).
            result = await self._api.generate(body, retry_rate_limited=False)
            job.api_call_done()
            images = [await self._download(image) for image in result.images]
            # Stored before posting: a Remix pressed the moment the result appears shows it.
            await self._store.generations.set_seed(generation.id, result.seed)
            message_ids = await self._publisher.job_succeeded(generation, result, images)
        except RateLimitedError as exc:
            await self._rate_limited(generation, exc)
        except (AimlApiError, ReferenceUnavailable, DeliveryFailed) as exc:
            await self._fail(generation, exc.user_message, log_level=logging.WARNING)
        except Exception:
            log.exception("generation %s: unexpected failure", generation.id)
            await self._fail(generation, "Something went wrong on our side. Press Reroll to retry.")
        else:
            await self._store.generations.mark_done(
                generation.id,
                seed=result.seed,
                result_message_ids=message_ids,
                inference_seconds=result.inference_seconds,
                finished_at=self._now(),
                nsfw_withheld=sum(image.nsfw for image in result.images),
            )
            log.info(
                "generation %s: done in %.2fs (api inference %s)",
                generation.id,
                time.monotonic() - started,
                result.inference_seconds,
            )

    async def _rate_limited(self, generation: Generation, exc: RateLimitedError) -> None:
        """Back in line (raising :class:`RateLimited`) unless the job has waited too long."""
        if self._now() - generation.created_at >= self._job_timeout:
            await self._fail(generation, BUSY_TOO_LONG, log_level=logging.WARNING)
            return
        requeued = await self._store.generations.mark_requeued(generation.id)
        if requeued is not None and self._on_requeued is not None:
            self._on_requeued(requeued)
        raise RateLimited(exc.retry_after) from None

    async def _download(self, image: GeneratedImage) -> bytes:
        return await self._api.download(image, max_bytes=MAX_RESULT_BYTES)

    async def _fail(self, generation: Generation, reason: str, *, log_level: int = 0) -> None:
        if log_level:
            log.log(log_level, "generation %s: failed: %s", generation.id, reason)
        await self._store.generations.mark_failed(generation.id, reason, self._now())
        await self._publisher.job_failed(generation, reason)
