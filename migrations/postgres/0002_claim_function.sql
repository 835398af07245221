-- A claim in one call. The claim of `store/events/postgres` (its docs say why each step is
-- there) was seven statements and as many round trips, each costing both processes more CPU
-- than the statement itself: at 500 Messenger messages a second on two shared cores that was
-- most of the database's work. Here the same statements run inside the server, in the one
-- transaction of the call, so nothing about the queue changes:
--
-- - every statement of a VOLATILE function takes a new snapshot (READ COMMITTED), so the
--   group's head is read after its advisory lock was granted and sees every claim of the
--   group committed before, as the separate statements did;
-- - the advisory locks are transaction-scoped: released when the call's transaction ends;
-- - instances of the previous version, claiming with separate statements, take the same locks
--   in the same way, so a rolling upgrade can run both at once.
--
-- Returns the batch's rows, or one row with a NULL id: when the pool's next pending event
-- becomes ready, and whether a group was passed over because a concurrent claim held it.

CREATE OR REPLACE FUNCTION salesbot_claim(
    p_pool         TEXT,
    p_worker       TEXT,
    p_now          BIGINT,
    p_locked_until BIGINT,
    p_kinds        TEXT[],     -- kinds taken in batches ...
    p_max          INTEGER[],  -- ... and their most events per batch; other kinds take one
    p_candidates   INTEGER,
    p_looks        INTEGER
) RETURNS TABLE (
    id          BIGINT,
    kind        TEXT,
    dedupe_key  TEXT,
    group_key   TEXT,
    payload     BYTEA,
    attempts    INTEGER,
    received_at BIGINT,
    run_id      BIGINT,
    next_run_at BIGINT,
    contended   BOOLEAN
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_contended TEXT[] := '{}';
    v_groups    TEXT[];
    v_group     TEXT;
    v_head      BIGINT;
    v_kind      TEXT;
    v_max       INTEGER;
BEGIN
    FOR look IN 1..p_looks LOOP
        -- The distinct groups among the oldest ready events whose group, as far as this
        -- snapshot knows, has nothing running; oldest first.
        SELECT array_agg(d.group_key ORDER BY d.pos) INTO v_groups
        FROM (SELECT c.group_key, min(c.pos) AS pos
              FROM (SELECT e.group_key, row_number() OVER (ORDER BY e.run_at, e.id) AS pos
                    FROM events e
                    WHERE e.status = 'pending' AND e.pool = p_pool AND e.run_at <= p_now
                      AND NOT (e.group_key = ANY(v_contended))
                      AND NOT EXISTS (SELECT 1 FROM events r
                                      WHERE r.status = 'running' AND r.group_key = e.group_key)
                    ORDER BY e.run_at, e.id
                    LIMIT p_candidates) c
              GROUP BY c.group_key) d;
        EXIT WHEN v_groups IS NULL;
        -- Oldest first. Concurrent claims race for the same first groups; a lost race costs
        -- one lock attempt here, inside the server, not a round trip.
        FOREACH v_group IN ARRAY v_groups LOOP
            IF NOT pg_try_advisory_xact_lock(hashtextextended(v_group, 0)) THEN
                -- Another claim is choosing this group's batch right now.
                v_contended := v_contended || v_group;
                CONTINUE;
            END IF;
            SELECT e.id, e.kind INTO v_head, v_kind
            FROM events e
            WHERE e.status = 'pending' AND e.pool = p_pool AND e.run_at <= p_now
              AND e.group_key = v_group
              AND NOT EXISTS (SELECT 1 FROM events r
                              WHERE r.status = 'running' AND r.group_key = v_group)
            ORDER BY e.run_at, e.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            v_max := greatest(coalesce(p_max[array_position(p_kinds, v_kind)], 1), 1);
            -- The ids as one array: `id = head OR id IN (...)` cannot use the primary key.
            RETURN QUERY
            UPDATE events u SET status = 'running', attempts = u.attempts + 1,
                   locked_by = p_worker, locked_until = p_locked_until
            WHERE u.id = ANY(ARRAY(SELECT b.id FROM events b
                                   WHERE b.status = 'pending' AND b.group_key = v_group
                                     AND b.kind = v_kind AND b.id != v_head
                                     AND (b.run_at <= p_now OR b.attempts = 0)
                                   ORDER BY b.id
                                   LIMIT v_max - 1
                                   FOR UPDATE SKIP LOCKED) || v_head)
            RETURNING u.id, u.kind, u.dedupe_key, u.group_key, u.payload, u.attempts,
                      u.received_at, u.run_id, NULL::BIGINT, FALSE;
            RETURN;
        END LOOP;
    END LOOP;
    RETURN QUERY
    SELECT NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BYTEA, NULL::INTEGER,
           NULL::BIGINT, NULL::BIGINT,
           (SELECT min(e.run_at) FROM events e
            WHERE e.status = 'pending' AND e.pool = p_pool AND e.run_at > p_now),
           cardinality(v_contended) > 0;
END
$$;
