"""The queue's truth in the database: fair claims, the cap, the back-off, leases; both engines."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from services.store import Generation, GenerationStatus, Store
from services.store.job_queue import Claimed, NoClaim, Refusal
from tests.services.store.records import FakeClock, attempt, new

pytestmark = pytest.mark.usefixtures("clock")


async def submit(store: Store, *users: int) -> list[int]:
    return [(await store.generations.create(new(user_id=user))).id for user in users]


async def claim(store: Store, worker: str = "w1", cap: int = 4) -> Generation | NoClaim:
    outcome = await store.queue.claim(worker, max_concurrent=cap)
    return outcome.generation if isinstance(outcome, Claimed) else outcome


async def claimed_id(store: Store, worker: str = "w1", cap: int = 4) -> int:
    claimed = await claim(store, worker, cap)
    assert isinstance(claimed, Generation), claimed
    return claimed.id


async def answer(store: Store, generation_id: int, cap: int = 4) -> None:
    generation = await store.generations.get(generation_id)
    assert generation is not None
    assert await store.queue.answered(generation, answer="{}", seed=1, max_concurrent=cap)


async def test_members_are_served_in_turn_and_fifo_within_a_member(store: Store):
    ids = await submit(store, 1, 1, 1, 2, 2, 3)
    predicted = await store.queue.dispatch_order()
    started = [await claimed_id(store, cap=10) for _ in ids]
    assert started == [ids[0], ids[3], ids[5], ids[1], ids[4], ids[2]]
    assert predicted == started
    assert await claim(store, cap=10) == NoClaim(Refusal.EMPTY)


async def test_a_flood_from_one_member_waits_behind_another_members_first_job(store: Store):
    flood = await submit(store, 1, 1, 1, 1)
    assert await claimed_id(store) == flood[0]
    [other] = await submit(store, 2)
    assert await claimed_id(store) == other


@pytest.mark.parametrize("seed", range(3))
async def test_predicted_places_match_the_order_claims_really_take(store: Store, seed: int):
    rng = random.Random(seed)
    await submit(store, rng.randrange(6))
    await claimed_id(store, cap=50)  # one served already, so earlier turns count
    await submit(store, *(rng.randrange(6) for _ in range(30)))
    predicted = await store.queue.dispatch_order()
    assert [await claimed_id(store, cap=50) for _ in predicted] == predicted


async def test_the_cap_counts_calls_in_flight_in_every_process_not_deliveries(store: Store):
    ids = await submit(store, 1, 2, 3)
    assert await claimed_id(store, "w1", cap=2) == ids[0]
    assert await claimed_id(store, "w2", cap=2) == ids[1]
    assert await claim(store, "w1", cap=2) == NoClaim(Refusal.FULL)
    assert await claim(store, "w2", cap=2) == NoClaim(Refusal.FULL)
    await answer(store, ids[0], cap=2)  # answered: posting needs no API slot
    assert await claimed_id(store, "w2", cap=2) == ids[2]


async def test_a_claim_says_whether_another_would_start_a_job_now(store: Store):
    await submit(store, 1, 2, 3)
    first = await store.queue.claim("w1", max_concurrent=2)
    assert isinstance(first, Claimed)
    assert (first.others_waiting, first.slot_left) == (True, True)
    second = await store.queue.claim("w1", max_concurrent=2)
    assert isinstance(second, Claimed)
    assert (second.others_waiting, second.slot_left) == (True, False), "the cap is reached"
    await answer(store, first.generation.id, cap=2)
    third = await store.queue.claim("w1", max_concurrent=2)
    assert isinstance(third, Claimed)
    assert (third.others_waiting, third.slot_left) == (False, False), "the last one waiting"
    assert await claim(store, "w1", cap=2) == NoClaim(Refusal.FULL)


async def test_many_processes_claiming_at_once_never_exceed_the_cap(db_url: str, store: Store):
    ids = await submit(store, *range(40))
    others = [await Store.open(db_url) for _ in range(3)]
    try:
        outcomes = await asyncio.gather(
            *(claim(s, f"w{n}", cap=5) for n, s in enumerate([store, *others] * 5))
        )
    finally:
        for other in others:
            await other.close()
    started = [o.id for o in outcomes if isinstance(o, Generation)]
    assert len(started) == 5 and len(set(started)) == 5 and set(started) <= set(ids)
    assert {o.reason for o in outcomes if isinstance(o, NoClaim)} == {Refusal.FULL}


async def test_a_cancelled_job_is_never_claimed(store: Store):
    first, second = await submit(store, 1, 2)
    assert await store.generations.mark_cancelled(first, cancelled_by=1) is not None
    assert await claimed_id(store) == second
    assert await store.generations.mark_cancelled(second, cancelled_by=1) is None  # running


async def test_a_429_puts_the_job_first_keeping_its_turn_and_slows_every_process(
    store: Store, clock: FakeClock
):
    ids = await submit(store, 1, 2, 3, 4, 1)
    first = await store.generations.get(await claimed_id(store, cap=4))
    second = await store.generations.get(await claimed_id(store, cap=4))
    assert first is not None and second is not None
    requeued = await store.queue.requeue(first, rate_limited=True, retry_after=10, max_concurrent=4)
    assert requeued is not None and requeued.pause == 10
    assert requeued.generation.status is GenerationStatus.QUEUED
    assert (await store.queue.dispatch_order())[0] == ids[0], "first again, its turn kept"
    assert await claim(store, "w2") == NoClaim(Refusal.BACKING_OFF, 10.0)
    # The same congestion event (a job started before the slow-down) does not halve again.
    again = await store.queue.requeue(second, rate_limited=True, max_concurrent=4)
    assert again is not None and again.pause is None
    assert await store.queue.live_limit(4) == 2
    clock.now += timedelta(seconds=10)
    assert await claimed_id(store, "w2") == ids[0]
    assert await claimed_id(store, "w2") == ids[1]
    assert await claim(store, "w2") == NoClaim(Refusal.FULL), "halved: 2 calls at once"
    await answer(store, ids[0])  # a success since the slow-down earns one slot back
    assert await store.queue.live_limit(4) == 3
    assert await claimed_id(store, "w2") == ids[2]


async def test_backoff_without_retry_after_grows_and_a_success_resets_it(
    store: Store, clock: FakeClock
):
    [job] = await submit(store, 1)
    pauses = []
    for _ in range(4):
        claimed = await claim(store, cap=1)
        assert isinstance(claimed, Generation)
        requeued = await store.queue.requeue(
            claimed, rate_limited=True, backoff=lambda strikes: 2.0**strikes, max_concurrent=1
        )
        assert requeued is not None and requeued.pause is not None
        pauses.append(requeued.pause)
        clock.now += timedelta(seconds=requeued.pause)
        assert await store.queue.live_limit(1) == 1, "never below one"
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    await answer(store, await claimed_id(store, cap=1), cap=1)
    [later] = await submit(store, 1)
    claimed = await claim(store, cap=1)
    assert isinstance(claimed, Generation) and claimed.id == later
    requeued = await store.queue.requeue(
        claimed, rate_limited=True, backoff=lambda strikes: 2.0**strikes, max_concurrent=1
    )
    assert requeued is not None and requeued.pause == 1.0, "a success starts the backoff over"
    assert job != later


async def test_a_claim_says_whether_its_answer_can_earn_a_slot_back(store: Store, clock: FakeClock):
    await submit(store, 1, 2, 3)
    calm = await store.queue.claim("w1", max_concurrent=2)
    assert isinstance(calm, Claimed) and not calm.throttled
    slowed = await store.queue.requeue(
        calm.generation, rate_limited=True, retry_after=1, max_concurrent=2
    )
    assert slowed is not None and await store.queue.live_limit(2) == 1
    clock.now += timedelta(seconds=1)
    during = await store.queue.claim("w1", max_concurrent=2)
    assert isinstance(during, Claimed) and during.throttled
    assert await store.queue.answered(
        during.generation, answer="{}", seed=1, max_concurrent=2, throttled=during.throttled
    )
    assert await store.queue.live_limit(2) == 2, "one success earned the slot back"
    after = await store.queue.claim("w1", max_concurrent=2)
    assert isinstance(after, Claimed) and not after.throttled


async def test_a_dead_process_loses_its_jobs_and_another_takes_them_up(
    store: Store, clock: FakeClock
):
    lease = timedelta(seconds=30)
    await store.workers.register("dead", "shard 0")
    await store.workers.register("alive", "shard 1")
    [job] = await submit(store, 1)
    assert await claimed_id(store, "dead") == job
    clock.now += timedelta(seconds=20)
    assert (await store.workers.heartbeat("alive", lease=lease)).reaped == 0
    clock.now += timedelta(seconds=20)  # "dead" last beat 40 s ago; "alive" 20 s ago
    beat = await store.workers.heartbeat("alive", lease=lease)
    assert beat.alive and beat.reaped == 1
    stored = await store.generations.get(job)
    assert stored is not None and stored.status is GenerationStatus.INTERRUPTED
    assert await claimed_id(store, "alive") == job
    # The dead process, were it only slow, learns it lost its lease; its answer is refused.
    late = await store.workers.heartbeat("dead", lease=lease)
    assert not late.alive
    assert stored.claimed_by is None


async def test_a_stopping_process_hands_its_running_jobs_back(store: Store):
    ids = await submit(store, 1, 2, 3)
    await store.workers.register("w1", "")
    await claimed_id(store, "w1")
    await claimed_id(store, "w2")
    assert await store.workers.retire("w1") == [ids[0]]
    assert await store.queue.depth() == (1, 2)
    assert {await claimed_id(store, "w2"), await claimed_id(store, "w2")} == {ids[0], ids[2]}


async def test_an_answer_from_a_process_that_lost_the_job_is_refused(store: Store):
    [job] = await submit(store, 1)
    claimed = await claim(store, "w1")
    assert isinstance(claimed, Generation)
    await store.workers.retire("w1")
    assert await claimed_id(store, "w2") == job
    assert await store.queue.answered(claimed, answer="{}", seed=1, max_concurrent=4) is None


@pytest.mark.parametrize("throttled", [True, False], ids=["earning-back", "full-speed"])
async def test_the_paid_attempt_is_kept_with_the_answer_and_even_when_the_job_was_lost(
    store: Store, throttled: bool
):
    first, second = await submit(store, 1, 2)
    ours = await claim(store, "w1")
    lost = await claim(store, "w2")
    assert isinstance(ours, Generation) and isinstance(lost, Generation)
    await store.workers.retire("w2")
    await claimed_id(store, "w3")  # w2's job goes to w3 while w2's API call still runs
    paid = {job.id: attempt(job, usd_nanos=1_000 * job.id) for job in (ours, lost)}
    stored = await store.queue.answered(
        ours, answer="{}", seed=7, max_concurrent=4, paid=paid[ours.id]
    )
    assert stored is not None and stored.seed == 7
    assert (
        await store.queue.answered(lost, answer="{}", seed=8, max_concurrent=4, paid=paid[lost.id])
        is None
    ), "not ours to post any more"
    for job in (ours, lost):
        [row] = await store.api_attempts.for_generation(job.id)
        assert row.usd_nanos == 1_000 * job.id, "the call was paid for whoever posts it"
    assert {ours.id, lost.id} == {first, second}


async def test_the_out_of_credits_hold_stops_every_processes_claims(store: Store):
    await submit(store, 1)
    assert await store.queue.set_credit_hold(True)
    assert not await store.queue.set_credit_hold(True)
    assert await claim(store, "w2") == NoClaim(Refusal.CREDIT_HOLD)
    assert await store.queue.credit_hold()
    assert await store.queue.set_credit_hold(False)
    assert isinstance(await claim(store, "w2"), Generation)


async def test_member_active_counts_waiting_and_running_jobs(store: Store):
    first, _ = await submit(store, 7, 7)
    await submit(store, 8)
    assert await store.queue.member_active(7) == 2
    await claimed_id(store)
    assert await store.queue.member_active(7) == 2
    await store.generations.mark_failed(first, "no")
    assert await store.queue.member_active(7) == 1


async def test_a_job_in_intake_is_never_claimed_and_fails_if_its_process_dies(
    store: Store, clock: FakeClock
):
    await store.workers.register("front", "shard 0")
    taking_in = await store.generations.create(new(user_id=1), intake_by="front")
    assert taking_in.status is GenerationStatus.INTAKE
    assert await store.queue.member_active(1) == 0, "counted only as it is queued"
    assert await claim(store, "w2") == NoClaim(Refusal.EMPTY)
    await store.generations.set_card(taking_in.id, channel_id=5, message_id=6)
    clock.now += timedelta(minutes=1)  # "front" died while reading the picture
    beat = await store.workers.heartbeat("w2", lease=timedelta(seconds=30), abandoned_reason="gone")
    [lost] = beat.abandoned
    assert (lost.id, lost.status, lost.error) == (taking_in.id, GenerationStatus.FAILED, "gone")
    assert lost.card_message_id == 6, "its card can say so"
    async with store.admission() as conn:
        assert await store.generations.mark_queued(taking_in.id, new(user_id=1), conn) is None


async def test_a_job_taken_in_is_queued_with_where_its_picture_went(store: Store):
    taking_in = await store.generations.create(new(user_id=1), intake_by="w1")
    taken_in = new(user_id=1, reference_url="https://cdn.example/card-copy.png", thread_id=77)
    async with store.admission() as conn:
        queued = await store.generations.mark_queued(taking_in.id, taken_in, conn)
    assert queued is not None and queued.status is GenerationStatus.QUEUED
    assert (queued.reference_url, queued.thread_id, queued.claimed_by) == (
        "https://cdn.example/card-copy.png",
        77,
        None,
    )
    assert await claimed_id(store) == taking_in.id
