-- Status: what each vectorizer has embedded and what is left to do.

-- Counts for one vectorizer's inbox and queue.
CREATE OR REPLACE FUNCTION autoembed._queue_counts(
    v autoembed.vectorizer,
    OUT pending bigint, OUT claimable bigint, OUT in_flight bigint, OUT failed bigint,
    OUT live_claims bigint, OUT oldest timestamptz)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inbox_keys bigint;
    inbox_oldest timestamptz;
BEGIN
    EXECUTE format(
        'SELECT coalesce(sum(cardinality(%I)), 0), min(queued_at) FROM autoembed.%I',
        v.pk_columns[1], v.inbox_table)
        INTO inbox_keys, inbox_oldest;
    EXECUTE format($q$
        SELECT
            count(*) FILTER (WHERE failed_at IS NULL AND NOT live),
            count(*) FILTER (WHERE failed_at IS NULL AND NOT live
                             AND (next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now())),
            count(*) FILTER (WHERE live),
            count(*) FILTER (WHERE failed_at IS NOT NULL),
            count(DISTINCT claim_token) FILTER (WHERE live),
            min(queued_at) FILTER (WHERE failed_at IS NULL)
        FROM (SELECT q.*, coalesce(q.claim_token IS NOT NULL AND q.lease_until >= pg_catalog.now(), false) AS live
              FROM autoembed.%I AS q) AS q
        $q$, v.queue_table)
        INTO pending, claimable, in_flight, failed, live_claims, oldest;
    pending := pending + inbox_keys;
    claimable := claimable + inbox_keys;
    oldest := least(oldest, inbox_oldest);
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
        last_activity := greatest(v.last_claim_at, v.last_write_at);
        paused := v.paused;
        error := v.last_error;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW autoembed.vectorizer_status AS
    SELECT * FROM autoembed.vectorizer_stats();

-- For the dispatcher and sweep: which vectorizers have work a worker could
-- claim now, and how many claims are live on each.
CREATE OR REPLACE FUNCTION autoembed.work_summary()
RETURNS TABLE (vectorizer_id int, claimable bigint, live_claims bigint, last_claim_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    qc record;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer AS x WHERE NOT x.paused ORDER BY x.id LOOP
        SELECT * INTO qc FROM autoembed._queue_counts(v);
        vectorizer_id := v.id;
        claimable := qc.claimable;
        live_claims := qc.live_claims;
        last_claim_at := v.last_claim_at;
        RETURN NEXT;
    END LOOP;
END
$$;
