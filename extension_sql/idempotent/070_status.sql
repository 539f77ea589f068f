-- Status: what each vectorizer (and each of its versions) has embedded and
-- what is left to do.

-- Counts for one version's queue and the vectorizer's inbox (whose changes
-- are every version's), by distinct row: a row changed many times counts
-- once. pending: rows waiting (including those backing off after a
-- failure); claimable: the part a worker could claim now.
CREATE OR REPLACE FUNCTION autoembed._queue_counts(
    v autoembed.vectorizer, ver autoembed.vectorizer_version,
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
        ), claims AS (
            -- each claim in force once: its lease runs and its claimant's
            -- session lives (050_queue.sql)
            SELECT t.claim_token, autoembed._claim_held(t.claim_token, t.lease_until) AS held
            FROM (SELECT claim_token, max(lease_until) AS lease_until FROM autoembed.%5$I
                  WHERE claim_token IS NOT NULL GROUP BY claim_token) AS t
        ), queue AS (
            SELECT q.*, coalesce(c.held, false) AS live
            FROM autoembed.%5$I AS q LEFT JOIN claims AS c USING (claim_token)
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
        autoembed._pk_fragment(v, '%1$I'), ver.queue_table)
        INTO pending, claimable, in_flight, failed, live_claims, oldest;
END
$$;

-- What one version holds: distinct rows and chunks, and distinct rows
-- embedded in the last minute.
CREATE OR REPLACE FUNCTION autoembed._embedded_counts(
    v autoembed.vectorizer, ver autoembed.vectorizer_version,
    OUT embedded_rows bigint, OUT chunks bigint, OUT recent_rows bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format(
        'SELECT count(DISTINCT (%1$s)), count(*), '
        'count(DISTINCT (%1$s)) FILTER (WHERE embedded_at > pg_catalog.now() - interval ''1 minute'') '
        'FROM autoembed.%2$I',
        autoembed._pk_fragment(v, '%1$I'), ver.embeddings_table)
        INTO embedded_rows, chunks, recent_rows;
END
$$;

-- How far one version is: rows_total is the source table's rows now;
-- rows_done those with nothing left to do in this version (embedded, or
-- without text); percent their share. Cheap enough to poll (the queue and a
-- count of the source table): `autoembed set-model --wait` does.
CREATE OR REPLACE FUNCTION autoembed._version_progress(
    v autoembed.vectorizer, ver autoembed.vectorizer_version,
    OUT rows_total bigint, OUT rows_done bigint, OUT pending bigint, OUT in_flight bigint,
    OUT failed bigint, OUT percent numeric)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qc record;
BEGIN
    SELECT * INTO qc FROM autoembed._queue_counts(v, ver);
    IF EXISTS (SELECT 1 FROM pg_class AS c WHERE c.oid = v.source) THEN
        EXECUTE format('SELECT count(*) FROM %s', v.source) INTO rows_total;
    END IF;
    pending := qc.pending;
    in_flight := qc.in_flight;
    failed := qc.failed;
    rows_done := greatest(rows_total - qc.pending - qc.in_flight - qc.failed, 0);
    percent := CASE WHEN rows_total > 0 THEN round(100.0 * rows_done / rows_total, 1)
                    WHEN rows_total = 0 THEN 100 END;
END
$$;

-- A version's state and progress, by vectorizer and version name (a number,
-- model or tag; NULL: the active one).
CREATE OR REPLACE FUNCTION autoembed.version_progress(name text, version text DEFAULT NULL)
RETURNS TABLE (version_no int, state text, rows_total bigint, rows_done bigint, pending bigint,
               in_flight bigint, failed bigint, percent numeric)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
BEGIN
    RETURN QUERY SELECT ver.ordinal, ver.state, p.* FROM autoembed._version_progress(v, ver) AS p;
END
$$;

-- One version's model, tag, state and progress (as _version_progress), what
-- it holds, rows_per_second (rows embedded over the last minute) and eta
-- (the rest at that pace).
CREATE OR REPLACE FUNCTION autoembed._version_stats(
    v autoembed.vectorizer, ver autoembed.vectorizer_version,
    OUT version int, OUT model text, OUT model_version text, OUT dimensions int, OUT storage text,
    OUT state text, OUT activate text, OUT embedded_rows bigint, OUT chunks bigint, OUT rows_total bigint,
    OUT rows_done bigint, OUT pending bigint, OUT in_flight bigint, OUT failed bigint, OUT percent numeric,
    OUT rows_per_second numeric, OUT eta interval, OUT created_at timestamptz, OUT completed_at timestamptz,
    OUT activated_at timestamptz, OUT retired_at timestamptz, OUT error text)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    ec record;
    todo bigint;
BEGIN
    SELECT * INTO p FROM autoembed._version_progress(v, ver);
    SELECT * INTO ec FROM autoembed._embedded_counts(v, ver);
    version := ver.ordinal;
    model := ver.model;
    model_version := (SELECT m.tag FROM autoembed.model_version AS m WHERE m.id = ver.model_version_id);
    dimensions := ver.dimensions;
    storage := ver.storage;
    state := ver.state;
    activate := ver.activate;
    embedded_rows := ec.embedded_rows;
    chunks := ec.chunks;
    rows_total := p.rows_total;
    rows_done := p.rows_done;
    pending := p.pending;
    in_flight := p.in_flight;
    failed := p.failed;
    percent := p.percent;
    todo := p.pending + p.in_flight;
    rows_per_second := round(ec.recent_rows / 60.0, 2);
    eta := CASE WHEN todo = 0 THEN interval '0'
                WHEN ec.recent_rows > 0 THEN make_interval(secs => round(todo / (ec.recent_rows / 60.0))) END;
    created_at := ver.created_at;
    completed_at := ver.completed_at;
    activated_at := ver.activated_at;
    retired_at := ver.retired_at;
    error := ver.last_error;
    IF error IS NULL AND p.failed > 0 THEN
        error := autoembed._failed_summary(v, ver, p.failed);
    END IF;
END
$$;

-- Per vectorizer and version (a filter on vectorizer reaches only its versions).
CREATE OR REPLACE VIEW autoembed.vectorizer_versions AS
    SELECT x.name AS vectorizer, s.*
    FROM autoembed.vectorizer AS x
    JOIN autoembed.vectorizer_version AS y ON y.vectorizer_id = x.id
    CROSS JOIN LATERAL autoembed._version_stats(x, y) AS s
    ORDER BY x.id, y.ordinal;

-- "N rows failed ..., the latest: <error>"
CREATE OR REPLACE FUNCTION autoembed._failed_summary(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, failed bigint)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    latest text;
BEGIN
    EXECUTE format('SELECT q.last_error FROM autoembed.%I AS q WHERE q.failed_at IS NOT NULL '
                   'ORDER BY q.failed_at DESC LIMIT 1', ver.queue_table)
        INTO latest;
    RETURN format('%s rows failed (autoembed.failed_rows(%L) lists them, '
                  'autoembed.retry_failed(%L) requeues them); the latest: %s',
                  failed, v.name, v.name, latest);
END
$$;

-- Per vectorizer: its active version, and a running campaign's progress.
CREATE OR REPLACE FUNCTION autoembed.vectorizer_stats()
RETURNS TABLE (
    id int, name text, source text, model text, model_version text,
    embedded_rows bigint, chunks bigint, pending bigint, in_flight bigint, failed bigint,
    lag interval, last_activity timestamptz, paused boolean, error text,
    campaign_version int, campaign_model text, campaign_percent numeric, campaign_eta interval)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
    qc record;
    ec record;
    camp record;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer AS x ORDER BY x.id LOOP
        ver := autoembed._version(v, NULL);
        id := v.id;
        name := v.name;
        source := v.source::text;
        model := ver.model;
        model_version := (SELECT m.tag FROM autoembed.model_version AS m WHERE m.id = ver.model_version_id);
        SELECT * INTO ec FROM autoembed._embedded_counts(v, ver);
        embedded_rows := ec.embedded_rows;
        chunks := ec.chunks;
        SELECT * INTO qc FROM autoembed._queue_counts(v, ver);
        pending := qc.pending;
        in_flight := qc.in_flight;
        failed := qc.failed;
        lag := CASE WHEN qc.oldest IS NULL THEN interval '0' ELSE now() - qc.oldest END;
        last_activity := (SELECT max(x.last_claim_at) FROM autoembed.vectorizer_version AS x
                          WHERE x.vectorizer_id = v.id);
        paused := v.paused;
        error := ver.last_error;
        IF error IS NULL AND qc.failed > 0 THEN
            -- rows that failed for good: say so, with the latest row's error
            error := autoembed._failed_summary(v, ver, qc.failed);
        END IF;
        campaign_version := NULL;
        campaign_model := NULL;
        campaign_percent := NULL;
        campaign_eta := NULL;
        SELECT s.version, s.model, s.percent, s.eta, s.error INTO camp
        FROM autoembed.vectorizer_version AS y CROSS JOIN LATERAL autoembed._version_stats(v, y) AS s
        WHERE y.vectorizer_id = v.id AND y.state = 'building';
        IF FOUND THEN
            campaign_version := camp.version;
            campaign_model := camp.model;
            campaign_percent := camp.percent;
            campaign_eta := camp.eta;
            IF error IS NULL AND camp.error IS NOT NULL THEN
                error := format('campaign to %s: %s', camp.model, camp.error);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW autoembed.vectorizer_status AS
    SELECT * FROM autoembed.vectorizer_stats();

-- For the dispatcher, the sweep and `autoembed worker --once`: which
-- vectorizers have work, summed over their versions: claimable (a worker
-- could claim it now), pending, failed, live claims, and how many
-- signalled drain tasks have started (so the dispatcher knows how many of
-- its signals are still waiting in the broker).
CREATE OR REPLACE FUNCTION autoembed.work_summary(only_ids int[] DEFAULT NULL)
RETURNS TABLE (vectorizer_id int, claimable bigint, live_claims bigint, drains_started bigint,
               pending bigint, failed bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer AS x
             WHERE NOT x.paused AND (only_ids IS NULL OR x.id = ANY (only_ids))
             ORDER BY x.id LOOP
        vectorizer_id := v.id;
        drains_started := v.drains_started;
        SELECT sum(qc.claimable), sum(qc.live_claims), sum(qc.pending), sum(qc.failed)
        INTO claimable, live_claims, pending, failed
        FROM autoembed.vectorizer_version AS ver
        CROSS JOIN LATERAL autoembed._queue_counts(v, ver) AS qc
        WHERE ver.vectorizer_id = v.id;
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
