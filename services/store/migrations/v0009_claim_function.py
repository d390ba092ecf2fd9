"""PostgreSQL: a claim as one server-side function, so the queue's lock is held for microseconds.

A claim made of statements sent one by one holds the ``queue_state`` row's lock across several
round trips, and on a busy machine each round trip waits for its process's event loop: every
other process's claim then waits too. ``fluxbot_claim`` takes the lock, counts the calls in
flight, picks the next job by the fairness rule (``FOR UPDATE SKIP LOCKED``), starts it and
serves its member, in one call. Each of its statements reads a fresh snapshot (READ COMMITTED),
so it sees every claim committed before it took the lock. SQLite (one process) keeps the
claim in ``services/store/job_queue.py``; both are tested to pick alike.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION fluxbot_claim(p_worker varchar, p_max integer, p_now timestamptz)
RETURNS TABLE (outcome text, retry_in double precision, job_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    st queue_state%ROWTYPE;
    cap integer;
    busy bigint;
    picked record;
BEGIN
    SELECT * INTO st FROM queue_state WHERE id = 1 FOR UPDATE;
    IF st.credit_hold THEN
        RETURN QUERY SELECT 'credit-hold'::text, NULL::double precision, NULL::bigint;
        RETURN;
    END IF;
    IF st.resume_at IS NOT NULL AND st.resume_at > p_now THEN
        RETURN QUERY SELECT 'backing-off'::text,
            EXTRACT(EPOCH FROM st.resume_at - p_now)::double precision, NULL::bigint;
        RETURN;
    END IF;
    cap := LEAST(p_max, COALESCE(st.live_limit, p_max));
    SELECT count(*) INTO busy FROM generations g
        WHERE g.status = 'running' AND g.answer IS NULL;
    IF busy >= cap THEN
        RETURN QUERY SELECT 'full'::text, NULL::double precision, NULL::bigint;
        RETURN;
    END IF;
    SELECT g.id, g.user_id, COALESCE(m.last_served, 0) AS last_served INTO picked
        FROM generations g LEFT JOIN queue_members m ON m.user_id = g.user_id
        WHERE g.status IN ('queued', 'interrupted')
        ORDER BY COALESCE(m.last_served, 0), g.id
        LIMIT 1
        FOR UPDATE OF g SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'empty'::text, NULL::double precision, NULL::bigint;
        RETURN;
    END IF;
    UPDATE queue_state SET turn = st.turn + 1 WHERE id = 1;
    UPDATE generations SET
        status = 'running', claimed_by = p_worker, started_at = p_now,
        attempts = attempts + 1, error = NULL, queue_turn = st.turn + 1,
        served_before = picked.last_served, throttle_epoch = st.epoch
        WHERE id = picked.id;
    INSERT INTO queue_members (user_id, last_served) VALUES (picked.user_id, st.turn + 1)
        ON CONFLICT (user_id) DO UPDATE SET last_served = EXCLUDED.last_served;
    RETURN QUERY SELECT 'claimed'::text, NULL::double precision, picked.id::bigint;
END
$$
"""


def upgrade(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text(CLAIM_FUNCTION))
