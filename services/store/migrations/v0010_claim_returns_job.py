"""PostgreSQL: ``fluxbot_claim`` also returns the job it started and whether to claim again.

Three round trips per job went away: the read of the started job (it comes back from the
function's own ``UPDATE ... RETURNING``); the claim that would only have found the queue empty
or full (it says whether another job waits and whether a slot is left); and, when the queue was
at full speed as the job started (``throttled`` false), the answer's write to earn a slot back,
as there is none to earn. Otherwise the claim is v0009's, step for step. SQLite keeps its claim
in ``services/store/job_queue.py``.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

CLAIM_FUNCTION = """
CREATE FUNCTION fluxbot_claim(p_worker varchar, p_max integer, p_now timestamptz)
RETURNS TABLE (
    outcome text, retry_in double precision, others_waiting boolean, slot_left boolean,
    throttled boolean, job generations
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    st queue_state%ROWTYPE;
    cap integer;
    busy bigint;
    picked record;
    started generations%ROWTYPE;
    another boolean;
BEGIN
    SELECT * INTO st FROM queue_state WHERE id = 1 FOR UPDATE;
    IF st.credit_hold THEN
        RETURN QUERY SELECT 'credit-hold'::text, NULL::double precision, false, false, false,
            NULL::generations;
        RETURN;
    END IF;
    IF st.resume_at IS NOT NULL AND st.resume_at > p_now THEN
        RETURN QUERY SELECT 'backing-off'::text,
            EXTRACT(EPOCH FROM st.resume_at - p_now)::double precision, false, false, false,
            NULL::generations;
        RETURN;
    END IF;
    cap := LEAST(p_max, COALESCE(st.live_limit, p_max));
    SELECT count(*) INTO busy FROM generations g
        WHERE g.status = 'running' AND g.answer IS NULL;
    IF busy >= cap THEN
        RETURN QUERY SELECT 'full'::text, NULL::double precision, false, false, false,
            NULL::generations;
        RETURN;
    END IF;
    SELECT g.id, g.user_id, COALESCE(m.last_served, 0) AS last_served INTO picked
        FROM generations g LEFT JOIN queue_members m ON m.user_id = g.user_id
        WHERE g.status IN ('queued', 'interrupted')
        ORDER BY COALESCE(m.last_served, 0), g.id
        LIMIT 1
        FOR UPDATE OF g SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'empty'::text, NULL::double precision, false, false, false,
            NULL::generations;
        RETURN;
    END IF;
    UPDATE queue_state SET turn = st.turn + 1 WHERE id = 1;
    UPDATE generations SET
        status = 'running', claimed_by = p_worker, started_at = p_now,
        attempts = attempts + 1, error = NULL, queue_turn = st.turn + 1,
        served_before = picked.last_served, throttle_epoch = st.epoch
        WHERE id = picked.id
        RETURNING * INTO started;
    INSERT INTO queue_members (user_id, last_served) VALUES (picked.user_id, st.turn + 1)
        ON CONFLICT (user_id) DO UPDATE SET last_served = EXCLUDED.last_served;
    another := EXISTS (
        SELECT 1 FROM generations g
        WHERE g.status IN ('queued', 'interrupted') AND g.id <> picked.id
    );
    RETURN QUERY SELECT 'claimed'::text, NULL::double precision, another, busy + 1 < cap,
        st.live_limit IS NOT NULL OR st.strikes > 0, started;
END
$$
"""


def upgrade(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("DROP FUNCTION fluxbot_claim(varchar, integer, timestamptz)"))
        conn.execute(text(CLAIM_FUNCTION))
