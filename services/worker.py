"""Runs one queued generation from start to finish, talking to Discord only through a publisher."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.aimlapi import (
    AimlApiClient,
    ApiAttempt,
    DownloadError,
    GeneratedImage,
    GenerationResult,
    OutOfCreditsError,
    RateLimitedError,
)
from services.clock import utc_now
from services.costs import attempt_record, client_request_id, nanos_to_usd
from services.errors import UserFacingError
from services.jobs import UNEXPECTED, Job
from services.metrics import Metrics, Outcome
from services.model_registry import ReferenceInfo, model_entry
from services.store import Generation, NewApiAttempt, Store

log = logging.getLogger(__name__)

#: Largest result image we accept from the API's CDN; FLUX PNGs at 1 MP are ~1–2 MiB.
MAX_RESULT_BYTES = 25 * 1024 * 1024
#: Told when the API stayed too busy (429) for a job's whole JOB_TIMEOUT_SECONDS.
BUSY_TOO_LONG = (
    "The image service stayed too busy to take this image for too long. Press Reroll to try again."
)


def storable(seed: int | None) -> int | None:
    """The API may answer any seed; one past a 64-bit column is kept out of the store (shown
    on the result, but no member could type it back into the Remix form anyway)."""
    return seed if seed is not None and 0 < seed < 2**63 else None


class ReferenceUnavailable(UserFacingError):
    """The reference image can no longer be fetched (its card was deleted)."""

    default_user_message = (
        "The original image for this generation is gone (its message was deleted), "
        "so it can't be remixed. Start again with /imagine."
    )


class ReferenceUnreadable(UserFacingError):
    """The reference could not be fetched or read to measure it (a model needs its size)."""

    default_user_message = (
        "I couldn't read the picture this image starts from. Press Reroll to try again."
    )


class DeliveryFailed(UserFacingError):
    """Discord refused the result (e.g. a permission was taken away while the job ran)."""


class NoPublisher(UserFacingError):
    """A job reached Discord's side while no delivery extension was loaded."""

    default_user_message = "The bot was being updated. Press Reroll to try again."


class Publisher(Protocol):
    """What the services need from Discord; the delivery extension implements it."""

    async def fresh_reference_urls(self, generation: Generation) -> list[str]:
        """Every reference of the job at a URL the API can fetch now, the first one first."""

    async def ready_for_results(self, generation: Generation) -> None:
        """Wait until the place results go can take them (a thread still being opened)."""

    async def job_succeeded(
        self, generation: Generation, result: GenerationResult, images: list[bytes]
    ) -> list[int]: ...

    async def job_failed(self, generation: Generation, reason: str) -> None: ...

    async def posted_results(self, generation: Generation) -> list[int]:
        """Result messages of ``generation`` already posted (by a process that then stopped
        before it could record them), so a job answered before a crash is never posted twice."""

    async def edit_card(self, card_message_id: int) -> None:
        """Make the job card show the latest state of its newest generation, read now."""


class GenerationWorker:
    def __init__(
        self,
        *,
        store: Store,
        api: AimlApiClient,
        publisher: Callable[[], Publisher],
        show_on_card: Callable[[Generation], None],
        job_timeout_seconds: float = 600.0,
        now: Callable[[], datetime] = utc_now,
        out_of_credits: Callable[[Generation], Awaitable[bool]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``publisher`` is asked at each job start: the delivery extension can be reloaded.
        ``show_on_card`` asks for the job card to follow each change of state.
        ``out_of_credits`` is told of a job the API refused for want of credits (403); when it
        answers True the queue is paused and the job waits in line, else the job fails."""
        self._metrics = metrics or Metrics()
        self._store = store
        self._out_of_credits = out_of_credits
        self._api = api
        self._publisher = publisher
        self._job_timeout = timedelta(seconds=job_timeout_seconds)
        self._show_on_card = show_on_card
        self._now = now

    async def __call__(self, job: Job) -> None:
        publisher = self._publisher()
        generation = job.generation  # claimed: ``running`` under this process's lease
        started = time.monotonic()
        self._show_on_card(generation)
        api_seconds: float | None = None
        try:
            if generation.answer is None:
                result, api_seconds, paid = await self._generate(generation)
                stored = await job.answered(_answer_json(result), storable(result.seed), paid)
                if paid is not None:
                    self._spent(generation, paid)
                if stored is None:
                    log.warning("generation %s: lease lost while the API worked", generation.id)
                    return  # the process that took it over posts it
            else:  # answered before a stop or crash: post it, never pay for it twice
                result = GenerationResult.model_validate_json(generation.answer)
                if posted := await publisher.posted_results(generation):
                    log.info("generation %s: was posted before the restart", generation.id)
                    await self._done(generation, result, posted, started, None)
                    return
            # Downloaded once they can be posted: results waiting for a busy channel's thread
            # budget would otherwise each hold their pictures in memory meanwhile.
            await publisher.ready_for_results(generation)
            images = await self._download(result)
            message_ids = await publisher.job_succeeded(generation, result, images)
        except RateLimitedError as exc:
            await self._rate_limited(job, publisher, exc)
        except OutOfCreditsError as exc:
            if self._out_of_credits is None or not await self._out_of_credits(generation):
                await self._fail(publisher, generation, exc.user_message, log_level=logging.WARNING)
                return
            requeued = await job.requeue()
            if requeued is not None:
                self._show_on_card(requeued.generation)
        except UserFacingError as exc:
            await self._fail(publisher, generation, exc.user_message, log_level=logging.WARNING)
        except Exception:
            log.exception("generation %s: unexpected failure", generation.id)
            await self._fail(publisher, generation, UNEXPECTED)
        else:
            await self._done(generation, result, message_ids, started, api_seconds)

    async def _generate(
        self, generation: Generation
    ) -> tuple[GenerationResult, float, NewApiAttempt | None]:
        """The API call, with every reference at a URL it can fetch now."""
        image_urls = await self._publisher().fresh_reference_urls(generation)
        entry = model_entry(generation.model)
        reference = None
        if entry.needs_reference(generation.parameters):
            reference = await self._measure_reference(image_urls[0])
        body = entry.request_body(generation.parameters, image_urls, reference=reference)
        # 429s are the queue's business: it slows down as a whole (DESIGN §7).
        return await self._call_api(generation, body)

    async def _done(
        self,
        generation: Generation,
        result: GenerationResult,
        message_ids: Sequence[int],
        started: float,
        api_seconds: float | None,
    ) -> None:
        done = await self._store.generations.mark_done(
            generation.id,
            seed=storable(result.seed),
            result_message_ids=message_ids,
            inference_seconds=result.inference_seconds,
            finished_at=self._now(),
            nsfw_withheld=sum(image.nsfw for image in result.images),
        )
        self._metrics.job_ended(done or generation, Outcome.DONE, api_seconds=api_seconds)
        self._show_on_card(generation)  # once stored: an edit made at once must read "done"
        log.info(
            "generation %s: done in %.2fs (api inference %s)",
            generation.id,
            time.monotonic() - started,
            result.inference_seconds,
        )

    async def _record(self, generation: Generation, attempt: ApiAttempt) -> None:
        """A failed attempt's ids and cost, stored with the job as it ends (DESIGN §10)."""
        record = attempt_record(generation, attempt)
        await self._store.api_attempts.record(record)
        self._spent(generation, record)

    def _spent(self, generation: Generation, record: NewApiAttempt) -> None:
        self._metrics.spent(generation.model, float(nanos_to_usd(record.usd_nanos)))

    async def _measure_reference(self, url: str) -> ReferenceInfo:
        """Its size and file, for models whose body or limits depend on them."""
        try:
            data = await self._api.download(GeneratedImage(url=url), max_bytes=MAX_RESULT_BYTES)
        except DownloadError as exc:
            raise ReferenceUnreadable(detail=f"reference download failed: {exc}") from None
        measured = ReferenceInfo.measure(data)
        if measured is None:
            raise ReferenceUnreadable(detail="reference header unreadable")
        return measured

    async def _call_api(
        self, generation: Generation, body: dict[str, Any]
    ) -> tuple[GenerationResult, float, NewApiAttempt | None]:
        """The generation call, timed for the API latency histogram whatever its end.

        Failed attempts are stored as they end; the one that answered is returned, to be stored
        with the answer in one write (``Job.answered``): the result path waits for one write.
        """
        started = time.monotonic()
        outcome = "error"
        paid: list[NewApiAttempt] = []

        async def on_attempt(attempt: ApiAttempt) -> None:
            if attempt.outcome == "ok":
                paid.append(attempt_record(generation, attempt))
            else:
                await self._record(generation, attempt)

        try:
            answer = await self._api.generate(
                body,
                retry_rate_limited=False,
                client_request_id=client_request_id(generation),
                on_attempt=on_attempt,
            )
            outcome = "ok"
        except RateLimitedError:
            outcome = "rate_limited"
            raise
        finally:
            elapsed = time.monotonic() - started
            self._metrics.api_call(generation.model, outcome, elapsed)
        return answer, elapsed, paid[-1] if paid else None

    async def _download(self, result: GenerationResult) -> list[bytes]:
        return [
            await self._api.download(image, max_bytes=MAX_RESULT_BYTES) for image in result.images
        ]

    async def _rate_limited(self, job: Job, publisher: Publisher, exc: RateLimitedError) -> None:
        """Back in line, the whole queue slowing down, unless the job has waited too long."""
        generation = job.generation
        if self._now() - generation.created_at >= self._job_timeout:
            await self._fail(publisher, generation, BUSY_TOO_LONG, log_level=logging.WARNING)
            return
        requeued = await job.requeue(rate_limited=True, retry_after=exc.retry_after)
        if requeued is not None:
            self._show_on_card(requeued.generation)

    async def _fail(
        self, publisher: Publisher, generation: Generation, reason: str, *, log_level: int = 0
    ) -> None:
        if log_level:
            log.log(log_level, "generation %s: failed: %s", generation.id, reason)
        failed = await self._store.generations.mark_failed(generation.id, reason, self._now())
        if failed is not None:
            self._metrics.job_ended(failed, Outcome.FAILED)
        await publisher.job_failed(generation, reason)
        self._show_on_card(generation)


def _answer_json(result: GenerationResult) -> str:
    """The answer as stored for a re-delivery: URLs, seed, timing; never inline image bytes
    (an inline image is not kept, so after a crash that job fails plainly instead)."""
    images = [image.model_copy(update={"b64_json": None}) for image in result.images]
    return result.model_copy(update={"images": images}).model_dump_json()
