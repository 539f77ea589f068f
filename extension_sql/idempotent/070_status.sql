-- Status: what each vectorizer has embedded and what is left to do.

-- Counts for one vectorizer's inbox and queue.
-- Counts for one vectorizer's inbox and queue, by distinct row: a row changed
-- many times counts once. pending: rows waiting (including those backing off
-- after a failure); claimable: the part a worker could claim now.
CREATE OR REPLACE FUNCTION autoembed._queue_counts(
    v autoembed.vectorizer,
    OUT pending bigint, OUT claimable bigint, OUT in_flight bigint, OUT failed bigint,
    OUT live_claims bigint, OUT oldest timestamptz)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format($q$
        WITH inbox AS (
            SELECT %1$s, min(m.queued_at) AS queued_at
            FROM autoembed.%3$I AS m CROSS JOIN LATERAL unnest(%2$s) AS u(%4$s)
            GROUP BY %1$s
        ), queue AS (
            SELECT q.*, coalesce(q.claim_token IS NOT NULL AND q.lease_until >= pg_catalog.now(), false) AS live
            FROM autoembed.%5$I AS q
        ), waiting AS (
            SELECT %4$s, queued_at,
                   (next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now()) AS ready
            FROM queue WHERE failed_at IS NULL AND NOT live
            UNION ALL
            SELECT %4$s, queued_at, true FROM inbox
        ), per_row AS (
            SELECT bool_or(ready) AS ready, min(queued_at) AS queued_at FROM waiting GROUP BY %4$s
        )
        SELECT (SELECT count(*) FROM per_row),
               (SELECT count(*) FROM per_row WHERE ready),
               (SELECT count(*) FROM queue WHERE live),
               (SELECT count(*) FROM queue WHERE failed_at IS NOT NULL),
               (SELECT count(DISTINCT claim_token) FROM queue WHERE live),
               least((SELECT min(queued_at) FROM per_row), (SELECT min(queued_at) FROM queue WHERE live))
        $q$,
        autoembed._pk_fragment(v, 'u.%1$I'), autoembed._pk_fragment(v, 'm.%1$I'), v.inbox_table,
        autoembed._pk_fragment(v, '%1$I'), v.queue_table)
        INTO pending, claimable, in_flight, failed, live_claims, oldest;
END
$$;

CREATE OR REPLACE FUNCTION autoembed.vectorizer_stats()
RETURNS TABLE (
    id int, name text, source text, model text, model_version text,
    embedded_rows bigint, chunks bigint, pending bigint, in_flight bigint, failed bigint,
    lag interval, last_activity timestamptz, paused boolean, error text)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    qc record;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer AS x ORDER BY x.id LOOP
        id := v.id;
        name := v.name;
        source := v.source::text;
        model := v.model;
        model_version := (SELECT m.tag FROM autoembed.model_version AS m WHERE m.id = v.active_version_id);
        EXECUTE format(
            'SELECT count(DISTINCT (%s)), count(*) FROM autoembed.%I WHERE model_version_id = $1',
            autoembed._pk_fragment(v, '%1$I'), v.embeddings_table)
            INTO embedded_rows, chunks USING v.active_version_id;
        SELECT * INTO qc FROM autoembed._queue_counts(v);
        pending := qc.pending;
        in_flight := qc.in_flight;
        failed := qc.failed;
        lag := CASE WHEN qc.oldest IS NULL THEN interval '0' ELSE now() - qc.oldest END;
        last_activity := v.last_claim_at;
        paused := v.paused;
        error := v.last_error;
        IF error IS NULL AND qc.failed > 0 THEN
            -- rows that failed for good: say so, with the latest row's error
            EXECUTE format('SELECT q.last_error FROM autoembed.%I AS q WHERE q.failed_at IS NOT NULL '
                           'ORDER BY q.failed_at DESC LIMIT 1', v.queue_table)
                INTO error;
            error := format('%s rows failed (autoembed.failed_rows(%L) lists them, '
                            'autoembed.retry_failed(%L) requeues them); the latest: %s',
                            qc.failed, v.name, v.name, error);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW autoembed.vectorizer_status AS
    SELECT * FROM autoembed.vectorizer_stats();

-- For the dispatcher and sweep: which vectorizers have work a worker could
-- claim now, how many claims are live, and how many signalled drain tasks
-- have started (so the dispatcher knows how many of its signals are still
-- waiting in the broker).
CREATE OR REPLACE FUNCTION autoembed.work_summary(only_ids int[] DEFAULT NULL)
RETURNS TABLE (vectorizer_id int, claimable bigint, live_claims bigint, drains_started bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    qc record;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer AS x
             WHERE NOT x.paused AND (only_ids IS NULL OR x.id = ANY (only_ids))
             ORDER BY x.id LOOP
        SELECT * INTO qc FROM autoembed._queue_counts(v);
        vectorizer_id := v.id;
        claimable := qc.claimable;
        live_claims := qc.live_claims;
        drains_started := v.drains_started;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Called by a drain task when it starts on a dispatcher's signal.
CREATE OR REPLACE FUNCTION autoembed.drain_started(vectorizer_id int)
RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE autoembed.vectorizer AS x SET drains_started = x.drains_started + 1 WHERE x.id = $1
$$;

-- Vectorizers with changes not yet merged into their queue: a cheap check the
-- dispatcher makes often, so a change whose NOTIFY was throttled away (see
-- the UPDATE trigger in 030_ddl.sql) still wakes a worker within a second.
CREATE OR REPLACE FUNCTION autoembed.vectorizers_with_changes()
RETURNS SETOF int
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    found_one boolean;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer AS x WHERE NOT x.paused ORDER BY x.id LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM autoembed.%I)', v.inbox_table) INTO found_one;
        IF found_one THEN
            RETURN QUERY SELECT v.id;   -- (pgspot cannot parse RETURN NEXT v.id)
        END IF;
    END LOOP;
END
$$;
