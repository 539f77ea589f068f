-- The work queues: one per version (035_version_tables.sql), fed from the
-- vectorizer's one inbox; the state machine every queue row goes through.
--
--   (trigger)        inbox row ──merge──► queue row: pending
--   claim_batch      pending ──► claimed (claim_token, claimed_seq := seq,
--                                lease_until, attempts + 1); rows queued
--                                moments ago first (see claim_batch)
--   complete_batch   claimed ──► deleted                 (seq = claimed_seq)
--                    claimed ──► pending, attempts 0     (changed meanwhile)
--   fail_items       claimed ──► pending after a backoff, or failed at max_attempts
--   lease expiry     claimed ──► claimable again; failed at max_attempts
--   claimant gone    claimed ──► the same, at once, for a claim tied to its
--                                session (see "Claims and the sessions that
--                                hold them" below)
--   new change       any     ──► pending, attempts 0 (a claim in progress stays
--                                claimed and is requeued by its completion)
--   retry_failed     failed  ──► pending
--
-- Guarantee: at-least-once processing, exactly-once effect per row and model
-- version. A completion writes only the rows its claim token still holds under
-- an unexpired lease, and only for source rows it can lock FOR KEY SHARE, so a
-- late worker, a deleted row or a changed key can never be overwritten by a
-- stale result.

-- Move inbox rows into every version's queue: the active one, a campaign's,
-- and the ready and retired ones (kept current for a switch or rollback).
-- One merger per vectorizer at a time; the others skip it (their claim still
-- sees what was merged before). set_model takes the same lock while it adds
-- a version, so no change is merged into the queues without the new one
-- after the new version's backfill has looked at the source table.
CREATE OR REPLACE FUNCTION autoembed._merge_inbox(v autoembed.vectorizer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    inserts text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('autoembed.merge_inbox'), v.id) THEN
        RETURN 0;
    END IF;
    SELECT string_agg(format($q$
        , %1$I AS (
            INSERT INTO autoembed.%2$I AS q (%3$s, seq, queued_at)
            SELECT %4$s, c.seq, c.queued_at FROM changes AS c ORDER BY %4$s
            ON CONFLICT (%3$s) DO UPDATE SET
                seq = EXCLUDED.seq,
                queued_at = CASE WHEN q.claim_token IS NULL
                                 THEN least(q.queued_at, EXCLUDED.queued_at)
                                 ELSE EXCLUDED.queued_at END,
                attempts = 0, next_attempt_at = NULL, failed_at = NULL, last_error = NULL)
        $q$, 'to_v' || ver.ordinal, ver.queue_table,
        autoembed._pk_fragment(v, '%1$I'), autoembed._pk_fragment(v, 'c.%1$I')), '' ORDER BY ver.ordinal)
    INTO inserts
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
    EXECUTE format($q$
        WITH moved AS (
            DELETE FROM autoembed.%1$I RETURNING *
        ), changes AS MATERIALIZED (
            SELECT DISTINCT ON (%2$s) %2$s, m.seq, m.queued_at
            FROM moved AS m CROSS JOIN LATERAL unnest(%3$s) AS u(%4$s)
            ORDER BY %2$s, m.seq DESC
        )%5$s
        SELECT count(*) FROM changes
        $q$,
        v.inbox_table,
        autoembed._pk_fragment(v, 'u.%1$I'),
        autoembed._pk_fragment(v, 'm.%1$I'),
        autoembed._pk_fragment(v, '%1$I'),
        coalesce(inserts, ''))
        INTO n;
    RETURN n;
END
$$;

-- Claims and the sessions that hold them. A claim whose token is a UUID of
-- version 8 (worker/queue.py, new_token) is tied to its claimant's database
-- session: claim_batch takes a session-level advisory lock on a key drawn
-- from the token, in the claim's own transaction, so the lock is held before
-- anyone can see the claim; end_claim (or release_claim) lets it go, and
-- when the session ends (the worker was killed, or its connection dropped)
-- PostgreSQL releases it. A tied claim whose lock no session holds is dead:
-- its rows are claimable at once, like an expired lease's (and count the
-- attempt the same way). The lease stays the bound for a live claimant that
-- hangs, and the only one for other tokens (a worker of an earlier release,
-- which would never end its claims' locks). Any role may test an advisory
-- lock, so a worker role needs no privilege for it. What can go wrong only
-- delays or repeats work: a key another session happens to hold (1 in 2^60)
-- makes a dead claim wait out its lease, or a live one look dead, and then
-- its rows are embedded twice, the first completion fenced out by the token.
CREATE OR REPLACE FUNCTION autoembed._claim_tied(claim_token uuid)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT substr($1::text, 15, 1) = '8'
$$;

CREATE OR REPLACE FUNCTION autoembed._claim_key(claim_token uuid)
RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ('x' || translate(left($1::text, 18), '-', ''))::bit(64)::bigint
$$;

-- Whether this session holds the claim's lock.
CREATE OR REPLACE FUNCTION autoembed._claim_mine(claim_token uuid)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks AS l, (SELECT autoembed._claim_key($1) AS k) AS x
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.mode = 'ExclusiveLock' AND l.granted
          AND l.pid = pg_backend_pid()
          AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
          AND l.classid = ((x.k >> 32) & 4294967295)::oid AND l.objid = (x.k & 4294967295)::oid)
$$;

-- Whether some session (this one included) holds the claim: a shared try of
-- its lock fails while another session holds it; only when it succeeds is
-- this session's own lock looked for. Never waits.
CREATE OR REPLACE FUNCTION autoembed._claim_alive(claim_token uuid)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN NOT pg_try_advisory_xact_lock_shared(autoembed._claim_key($1)) THEN true
                ELSE autoembed._claim_mine($1) END
$$;

-- Whether a claimed queue row is held by a claim still in force: its lease
-- runs and, for a tied claim, its claimant's session lives.
CREATE OR REPLACE FUNCTION autoembed._claim_held(claim_token uuid, lease_until timestamptz)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $2 < now() THEN false
                WHEN NOT autoembed._claim_tied($1) THEN true
                ELSE autoembed._claim_alive($1) END
$$;

-- End a claim: its lock is let go (rows it still holds become claimable at
-- once). A worker calls it after each batch, whatever happened to it.
CREATE OR REPLACE FUNCTION autoembed.end_claim(claim_token uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ended boolean := false;
BEGIN
    -- a token claimed twice in one session holds its lock twice
    WHILE autoembed._claim_tied(claim_token) AND autoembed._claim_mine(claim_token) LOOP
        PERFORM pg_advisory_unlock(autoembed._claim_key(claim_token));
        ended := true;
    END LOOP;
    RETURN ended;
END
$$;

-- A version by id (a worker's handle on it).
CREATE OR REPLACE FUNCTION autoembed._version_by_id(version_id int)
RETURNS autoembed.vectorizer_version
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ver autoembed.vectorizer_version;
BEGIN
    SELECT * INTO ver FROM autoembed.vectorizer_version AS x WHERE x.id = version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no vectorizer version with id % (it was dropped)', version_id
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN ver;
END
$$;

-- Claim up to batch_size rows of a version's queue for claim_token and
-- return each with the text to embed, read now (NULL when the row is gone or
-- all its columns are NULL), and whether the batch is a fresh one.
--
-- The order: rows queued within fresh_within, when there are any, make a
-- batch of their own, the most recently queued first (a fresh batch); else
-- the batch is the rows waiting longest (the backlog). Both are an index
-- scan of queued_at (_index_queue, 035_version_tables.sql), and a fresh
-- batch is no larger than its fresh rows: so a change made during a long
-- backfill waits for the batch in flight and then its own, not for the
-- backlog. queued_at is when a row started waiting (the start of the
-- transaction that queued it; a later change keeps it, unless the row was
-- claimed meanwhile). A worker asks for the fresh lane at most every other
-- batch, so the backlog gets half the batches however many changes come in
-- (worker/drain.py, Scheduler); fresh_within NULL: the backlog only.
CREATE OR REPLACE FUNCTION autoembed.claim_batch(
    version_id int, batch_size int, lease interval, claim_token uuid, fresh_within interval)
RETURNS TABLE (pk jsonb, document text, fresh boolean)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
    n bigint;
BEGIN
    ver := autoembed._version_by_id(version_id);
    v := autoembed._vectorizer_by_id(ver.vectorizer_id);
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'autoembed: batch_size must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fresh_within < interval '0' THEN
        RAISE EXCEPTION 'autoembed: fresh_within must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease IS NULL OR lease <= interval '0' OR claim_token IS NULL THEN
        RAISE EXCEPTION 'autoembed: a claim needs a positive lease and a claim token'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v.paused THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class AS c WHERE c.oid = v.source) THEN
        RAISE EXCEPTION 'autoembed: the source table of vectorizer "%" no longer exists', v.name
            USING ERRCODE = 'undefined_table',
                  HINT = format('Drop the vectorizer: SELECT autoembed.drop_vectorizer(%L);', v.name);
    END IF;
    PERFORM autoembed._merge_inbox(v);

    -- Rows whose claim ran out or died max_attempts times (a worker crashed
    -- or hung on them each time) fail instead of being claimed again.
    EXECUTE format(
        'UPDATE autoembed.%I SET failed_at = pg_catalog.now(), claim_token = NULL, lease_until = NULL, '
        'last_error = pg_catalog.format(CASE WHEN lease_until < pg_catalog.now() '
        '    THEN ''lease expired on attempt %%s of %%s: the worker died or hung'' '
        '    ELSE ''claim lost on attempt %%s of %%s: the worker''''s database session ended (it died)'' END, '
        '    attempts, $1) '
        'WHERE failed_at IS NULL AND claim_token IS NOT NULL AND attempts >= $1 '
        'AND NOT autoembed._claim_held(claim_token, lease_until)',
        ver.queue_table) USING v.max_attempts;

    RETURN QUERY EXECUTE format($q$
        WITH recent AS MATERIALIZED (
            SELECT %1$s FROM autoembed.%2$I
            WHERE $4 IS NOT NULL AND queued_at > pg_catalog.now() - $4
              AND failed_at IS NULL
              AND (next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now())
              AND (claim_token IS NULL OR NOT autoembed._claim_held(claim_token, lease_until))
            ORDER BY queued_at DESC
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), backlog AS MATERIALIZED (
            SELECT %1$s FROM autoembed.%2$I
            WHERE NOT EXISTS (SELECT FROM recent)
              AND failed_at IS NULL
              AND (next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now())
              AND (claim_token IS NULL OR NOT autoembed._claim_held(claim_token, lease_until))
            ORDER BY queued_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), picked AS (
            SELECT * FROM recent UNION ALL SELECT * FROM backlog
        ), claimed AS (
            UPDATE autoembed.%2$I AS q
            SET claim_token = $2, claimed_seq = q.seq, lease_until = pg_catalog.now() + $3,
                attempts = q.attempts + 1
            FROM picked AS p WHERE %3$s
            RETURNING %4$s
        ), keys AS MATERIALIZED (
            SELECT %5$s AS pk FROM claimed AS c
        )
        -- the text through the vectorizer's source reader (030_ddl.sql): a
        -- worker role needs no privilege on the source table
        SELECT c.pk, d.document, EXISTS (SELECT FROM recent)
        FROM keys AS c
        LEFT JOIN autoembed.%6$I((SELECT pg_catalog.jsonb_agg(x.pk) FROM keys AS x), false) AS d
          ON d.pk = c.pk
        $q$,
        autoembed._pk_fragment(v, '%1$I'),
        ver.queue_table,
        autoembed._pk_join(v, 'q', 'p'),
        autoembed._pk_fragment(v, 'q.%1$I'),
        autoembed._pk_json(v, 'c'),
        autoembed._source_function(v))
        USING batch_size, claim_token, lease, fresh_within;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        -- work is flowing again: a version-level error no longer applies.
        -- Bookkeeping only, so it never waits: this transaction holds the
        -- claimed queue rows, and a completion activating a version may be
        -- waiting for one of them: waiting here could deadlock. A busy row
        -- is updated next time.
        UPDATE autoembed.vectorizer_version AS x SET last_claim_at = now(), last_error = NULL, last_error_at = NULL
        WHERE x.id = (SELECT y.id FROM autoembed.vectorizer_version AS y WHERE y.id = ver.id
                      FOR NO KEY UPDATE SKIP LOCKED);
        -- Last, so no error after it leaves the lock behind: a tied claim is
        -- this session's from before anyone can see it (see _claim_tied).
        IF autoembed._claim_tied(claim_token) THEN
            PERFORM pg_try_advisory_lock(autoembed._claim_key(claim_token));
        END IF;
    END IF;
END
$$;

-- The same, the backlog only (the claim of workers of releases before the
-- fresh lane).
CREATE OR REPLACE FUNCTION autoembed.claim_batch(
    version_id int, batch_size int, lease interval, claim_token uuid)
RETURNS TABLE (pk jsonb, document text)
LANGUAGE sql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.pk, c.document FROM autoembed.claim_batch($1, $2, $3, $4, NULL) AS c
$$;

-- Make sure a worker's model version may write to a version: the first
-- model version to write to it is bound to it; any other is refused.
CREATE OR REPLACE FUNCTION autoembed._check_version(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, model_version_id int)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mv autoembed.model_version;
    bound int;
BEGIN
    SELECT * INTO mv FROM autoembed.model_version AS m WHERE m.id = model_version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no model version with id %', model_version_id USING ERRCODE = 'undefined_object';
    END IF;
    IF mv.model <> ver.model THEN
        RAISE EXCEPTION 'autoembed: model version % is of model "%" but version % of vectorizer "%" uses "%"',
            mv.tag, mv.model, ver.ordinal, v.name, ver.model USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF mv.dimensions <> ver.dimensions THEN
        RAISE EXCEPTION 'autoembed: model version % has % dimensions but version % of vectorizer "%" stores %',
            mv.tag, mv.dimensions, ver.ordinal, v.name, ver.dimensions USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF ver.model_version_id IS NULL THEN
        UPDATE autoembed.vectorizer_version AS x SET model_version_id = _check_version.model_version_id
        WHERE x.id = ver.id AND x.model_version_id IS NULL;
    END IF;
    SELECT x.model_version_id INTO bound FROM autoembed.vectorizer_version AS x WHERE x.id = ver.id;
    IF bound <> model_version_id THEN
        RAISE EXCEPTION 'autoembed: version % of vectorizer "%" is embedded with model version %, not %',
            ver.ordinal, v.name, (SELECT m.tag FROM autoembed.model_version AS m WHERE m.id = bound), mv.tag
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run workers that load exactly that model version (same weights, device precision and settings).';
    END IF;
END
$$;

-- Write the results of a claim. items: the keys processed (a JSON array of
-- key objects, as claim_batch returned them); chunk_item: for each chunk, the
-- 0-based position of its row in items. Rows not listed stay claimed until
-- their lease expires or the claim ends (end_claim). Returns how many rows were written, requeued because
-- they changed (or were busy) meanwhile, and rejected (claim no longer held).
CREATE OR REPLACE FUNCTION autoembed.complete_batch(
    version_id int, claim_token uuid, model_version_id int, items jsonb,
    chunk_item int[], chunk_no int[], chunk text[], embedding @extschema:vector@.vector[],
    OUT written int, OUT requeued int, OUT rejected int)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
    coldefs text;
    mine jsonb;       -- listed items still held by this claim, locked
    present jsonb;    -- ... whose source row exists
    lockable jsonb;   -- ... whose source row this completion could lock
    writable jsonb;   -- ... to write: locked, or gone (write nothing = delete)
    busy jsonb;       -- ... whose source row is being deleted or re-keyed now
    n int;
BEGIN
    IF claim_token IS NULL OR model_version_id IS NULL OR items IS NULL THEN
        RAISE EXCEPTION 'autoembed: complete_batch needs a claim token, a model version and items'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'autoembed: items must be a JSON array of keys' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(chunk_item) IS DISTINCT FROM cardinality(chunk_no)
       OR cardinality(chunk_item) IS DISTINCT FROM cardinality(chunk)
       OR cardinality(chunk_item) IS DISTINCT FROM cardinality(embedding) THEN
        RAISE EXCEPTION 'autoembed: chunk arrays must have equal lengths' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    ver := autoembed._version_by_id(version_id);
    -- Hold the vectorizer's BM25 settings still while writing postings with
    -- impacts computed from them (autoembed._reimpact changes them under an
    -- exclusive lock on the same row, and only then touches postings); and
    -- its versions: set_model, activate_version, drop_version ... take it
    -- FOR UPDATE first. So this lock comes before any other.
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = ver.vectorizer_id FOR SHARE;
    ver := autoembed._version_by_id(version_id);
    PERFORM autoembed._check_version(v, ver, model_version_id);
    -- Changes still in the inbox must bump their queue rows first, so a row
    -- changed after its claim is requeued rather than marked done.
    PERFORM autoembed._merge_inbox(v);
    coldefs := autoembed._pk_fragment(v, '%1$I %2$s');

    EXECUTE format($q$
        SELECT coalesce(jsonb_agg(%1$s), '[]') FROM (
            SELECT q.* FROM autoembed.%2$I AS q
            JOIN jsonb_to_recordset($2) AS k(%3$s) ON %4$s
            WHERE q.claim_token = $1 AND q.lease_until > pg_catalog.now()
            ORDER BY %5$s
            FOR UPDATE OF q) AS q
        $q$,
        autoembed._pk_json(v, 'q'), ver.queue_table, coldefs,
        autoembed._pk_join(v, 'q', 'k'), autoembed._pk_fragment(v, 'q.%1$I'))
        INTO mine USING claim_token, items;
    rejected := jsonb_array_length(items) - jsonb_array_length(mine);

    -- The source rows, through the vectorizer's source reader (030_ddl.sql).
    EXECUTE format('SELECT coalesce(jsonb_agg(d.pk), ''[]'') FROM autoembed.%I($1, false) AS d',
                   autoembed._source_function(v))
        INTO present USING mine;
    EXECUTE format('SELECT coalesce(jsonb_agg(d.pk), ''[]'') FROM autoembed.%I($1, true) AS d',
                   autoembed._source_function(v))
        INTO lockable USING present;
    SELECT coalesce(jsonb_agg(m.k), '[]') INTO busy
    FROM jsonb_array_elements(present) AS m(k) WHERE NOT lockable @> jsonb_build_array(m.k);
    SELECT coalesce(jsonb_agg(m.k), '[]') INTO writable
    FROM jsonb_array_elements(mine) AS m(k) WHERE NOT busy @> jsonb_build_array(m.k);

    -- Replace the chunks of every writable row, in this version only;
    -- rows whose source row is gone keep none.
    PERFORM autoembed._delete_chunks(v.id, ver.id, writable);
    PERFORM autoembed._insert_chunks(
        v, ver, model_version_id, lockable, items, chunk_item, chunk_no, chunk, embedding);

    -- Finish the queue rows: done unless the row changed after the claim.
    EXECUTE format(
        'DELETE FROM autoembed.%I AS q USING jsonb_to_recordset($1) AS k(%s) '
        'WHERE %s AND q.seq = q.claimed_seq',
        ver.queue_table, coldefs, autoembed._pk_join(v, 'q', 'k'))
        USING writable;
    GET DIAGNOSTICS n = ROW_COUNT;
    written := jsonb_array_length(writable);
    requeued := written - n + jsonb_array_length(busy);
    EXECUTE format(
        'UPDATE autoembed.%I AS q SET claim_token = NULL, lease_until = NULL, '
        'attempts = CASE WHEN q.seq = q.claimed_seq THEN greatest(q.attempts - 1, 0) ELSE 0 END '
        'FROM jsonb_to_recordset($1) AS k(%s) WHERE %s AND q.claim_token = $2',
        ver.queue_table, coldefs, autoembed._pk_join(v, 'q', 'k'))
        USING mine, claim_token;
    -- A campaign whose queue this emptied is complete (047_lifecycle.sql).
    IF ver.state = 'building' THEN
        PERFORM autoembed._finish_campaign(v, ver);
    END IF;
END
$$;

-- Report rows a worker could not embed. Each goes back to pending after an
-- exponential backoff, or to failed once it has used max_attempts.
CREATE OR REPLACE FUNCTION autoembed.fail_items(
    version_id int, claim_token uuid, items jsonb, errors text[])
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
    n int;
BEGIN
    ver := autoembed._version_by_id(version_id);
    v := autoembed._vectorizer_by_id(ver.vectorizer_id);
    IF jsonb_typeof(items) IS DISTINCT FROM 'array' OR jsonb_array_length(items) <> cardinality(errors) THEN
        RAISE EXCEPTION 'autoembed: fail_items needs one error per item' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format($q$
        UPDATE autoembed.%1$I AS q SET
            claim_token = NULL, lease_until = NULL,
            last_error = left(e.error, 4000),
            failed_at = CASE WHEN q.attempts >= $2 THEN pg_catalog.now() END,
            next_attempt_at = CASE WHEN q.attempts < $2 THEN pg_catalog.now()
                + least($3 * power(2, least(q.attempts - 1, 20))::int, interval '1 hour') END
        FROM jsonb_array_elements($4) WITH ORDINALITY AS i(key, ord)
        CROSS JOIN LATERAL jsonb_to_record(i.key) AS k(%2$s)
        JOIN unnest($5) WITH ORDINALITY AS e(error, ord) ON e.ord = i.ord
        WHERE %3$s AND q.claim_token = $1
        $q$,
        ver.queue_table, autoembed._pk_fragment(v, '%1$I %2$s'), autoembed._pk_join(v, 'q', 'k'))
        USING claim_token, v.max_attempts, v.retry_delay, items, errors;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Keep a claim alive while a long batch is still being embedded.
CREATE OR REPLACE FUNCTION autoembed.extend_lease(version_id int, claim_token uuid, lease interval)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ver autoembed.vectorizer_version := autoembed._version_by_id(version_id);
    n int;
BEGIN
    EXECUTE format(
        'UPDATE autoembed.%I SET lease_until = pg_catalog.now() + $2 '
        'WHERE claim_token = $1 AND lease_until > pg_catalog.now()', ver.queue_table)
        USING claim_token, lease;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Give back a claim without counting an attempt (a worker shutting down).
CREATE OR REPLACE FUNCTION autoembed.release_claim(version_id int, claim_token uuid)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ver autoembed.vectorizer_version := autoembed._version_by_id(version_id);
    n int;
BEGIN
    EXECUTE format(
        'UPDATE autoembed.%I SET claim_token = NULL, lease_until = NULL, '
        'attempts = greatest(attempts - 1, 0) WHERE claim_token = $1', ver.queue_table)
        USING claim_token;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM autoembed.end_claim(claim_token);
    RETURN n;
END
$$;

-- Record a problem that stops a whole version (e.g. its model will not load
-- on a worker); shown by vectorizer_versions (and, for the active version,
-- vectorizer_status) until the version's next claim.
CREATE OR REPLACE FUNCTION autoembed.report_version_error(version_id int, error text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE autoembed.vectorizer_version AS x SET last_error = left($2, 4000), last_error_at = now()
    WHERE x.id = $1
$$;
