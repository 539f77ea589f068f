-- Text queries from plain SQL: autoembed.search('articles', 'reset my password', 10).
--
-- A query must be embedded by exactly the model version of the stored
-- vectors, and only the workers hold the model, so autoembed.embed_query():
--   1. looks the text up in autoembed.query_cache (per model version; the
--      text itself is compared). A hit needs no worker and no connection;
--   2. on a miss, adds a row to autoembed.query_request and sends NOTIFY
--      autoembed_query through a dblink loopback connection kept open for the
--      session (opening one costs ~5 ms), so the request is committed at once,
--      whatever the caller's own transaction does;
--   3. a worker's query service (worker/query_service.py) LISTENs, claims the
--      requests of model versions it can produce (FOR UPDATE SKIP LOCKED),
--      embeds them, writes the cache and deletes them in one transaction;
--   4. embed_query() waits for the answer through the same loopback
--      connection, which sees the worker's commit whatever the caller's
--      isolation level: on the claimed request's row lock while the worker
--      embeds (it wakes at the worker's commit), with short sleeps before
--      the claim, until autoembed.query_timeout (default 5 s), then fails
--      naming what to start.
--
-- Loopback credentials. dblink lets a non-superuser connect only with a
-- password from the connection string that the server really asked for (not
-- under trust or peer authentication). So a superuser runs
-- autoembed.setup_query_loopback() once (or `autoembed setup-queries`): it
-- makes a LOGIN role with a random password and no privileges, a foreign
-- server autoembed_loopback (dblink_fdw) pointing back at this database, and
-- a user mapping for PUBLIC holding that role's name and password — never a
-- password in a table (only superusers and the server's owner can read user
-- mapping options). The role needs no grants: the cache and the requests are
-- reached only through the SECURITY DEFINER functions below, which want the
-- exact query text, so nobody can list other sessions' queries. Without that
-- server, a superuser's session connects back as itself over the server's
-- own unix socket (trust-authenticated development setups, the embedded
-- default); other roles get an error naming setup_query_loopback().

-- The cache key of a query text.
CREATE OR REPLACE FUNCTION autoembed._query_digest(query text)
RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.sha256(pg_catalog.convert_to(query, 'UTF8'))
$$;

-- The cached embedding of exactly this text by this model version, if any;
-- stale: not used for a while (embed_query then refreshes last_used_at).
CREATE OR REPLACE FUNCTION autoembed._cached_query_embedding(
    version_id int, query text,
    OUT embedding @extschema:vector@.vector, OUT stale boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.embedding, c.last_used_at < pg_catalog.now() - interval '10 minutes'
    FROM autoembed.query_cache AS c
    WHERE c.model_version_id = version_id
      AND c.query_digest = autoembed._query_digest(_cached_query_embedding.query)
      AND c.query = _cached_query_embedding.query
$$;

CREATE OR REPLACE FUNCTION autoembed._check_query_text(query text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'autoembed: query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF btrim(query, E' \t\n\r\f\v') = '' THEN
        RAISE EXCEPTION 'autoembed: query must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(query) > 100000 THEN
        RAISE EXCEPTION 'autoembed: the query is % characters long; at most 100000 are allowed', length(query)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The model reads only its first few hundred tokens anyway.';
    END IF;
END
$$;

-- Run on the loopback connection: ask the workers to embed a query; the
-- request is committed when this returns (asynchronously: a request lost in a
-- crash is only asked again). Returns the request's id.
CREATE OR REPLACE FUNCTION autoembed._submit_query_request(version_id int, query text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request_id bigint;
BEGIN
    PERFORM autoembed._check_query_text(query);
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO autoembed.query_request (model_version_id, query)
    VALUES (version_id, query)
    RETURNING id INTO request_id;
    PERFORM pg_notify('autoembed_query', version_id::text);
    RETURN request_id;
END
$$;

-- Run on the loopback connection: the answer to a request, once there is one
-- (the embedding, or the error the worker met).
CREATE OR REPLACE FUNCTION autoembed._query_answer(
    request_id bigint, version_id int, query text,
    OUT embedding @extschema:vector@.vector, OUT error text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.embedding, a.error
    FROM (SELECT c.embedding, NULL::text AS error, 1 AS pref
          FROM autoembed.query_cache AS c
          WHERE c.model_version_id = version_id
            AND c.query_digest = autoembed._query_digest(_query_answer.query)
            AND c.query = _query_answer.query
          UNION ALL
          SELECT NULL, r.error, 2
          FROM autoembed.query_request AS r
          WHERE r.id = request_id AND r.model_version_id = version_id
            AND r.query = _query_answer.query AND r.error IS NOT NULL) AS a
    ORDER BY a.pref
    LIMIT 1
$$;

-- Run on the loopback connection: wait up to wait_ms for a worker that has
-- claimed the request to finish with it, then the answer (if any). A worker
-- holds the request's advisory lock (autoembed._query_lock) from its claim
-- until the answer is committed, so waiting for that lock wakes the moment
-- the answer is there: no polling while the worker embeds. A request not
-- claimed yet does not block. (Not a row lock: a claim skips locked rows.)
CREATE OR REPLACE FUNCTION autoembed._await_query_answer(
    request_id bigint, version_id int, query text, wait_ms int)
RETURNS TABLE (embedding @extschema:vector@.vector, error text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lock_key int[] := autoembed._query_lock(request_id);
BEGIN
    PERFORM set_config('lock_timeout', greatest(wait_ms, 1)::text, true);
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(lock_key[1], lock_key[2]);
    EXCEPTION WHEN lock_not_available THEN
        NULL;   -- still embedding: the caller checks its deadline and waits again
    END;
    RETURN QUERY SELECT a.embedding, a.error
    FROM autoembed._query_answer(request_id, version_id, query) AS a;
END
$$;

-- The advisory lock a worker holds on a request it is answering: the
-- request table's oid and the request id (wrapped; a shared key only waits).
CREATE OR REPLACE FUNCTION autoembed._query_lock(request_id bigint)
RETURNS int[]
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['autoembed.query_request'::regclass::oid::int8::int4, (request_id % 2147483647)::int4]
$$;

-- Run on the loopback connection: mark a cached query as used.
CREATE OR REPLACE FUNCTION autoembed._touch_cached_query(version_id int, query text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE autoembed.query_cache AS c SET last_used_at = pg_catalog.now()
    WHERE c.model_version_id = version_id
      AND c.query_digest = autoembed._query_digest(_touch_cached_query.query)
      AND c.query = _touch_cached_query.query;
END
$$;

-- ------------------------------------------------------- the worker's side

-- Model versions with requests waiting.
CREATE OR REPLACE FUNCTION autoembed.query_request_versions()
RETURNS SETOF int
LANGUAGE sql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT r.model_version_id FROM autoembed.query_request AS r WHERE r.error IS NULL
$$;

-- Claim up to n waiting requests of these model versions, oldest first,
-- locked until the caller's transaction ends. Requests whose answer is
-- already cached (asked twice at once) are answered here and not returned.
CREATE OR REPLACE FUNCTION autoembed.claim_query_requests(version_ids int[], n int)
RETURNS TABLE (id bigint, model_version_id int, query text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH claimed AS MATERIALIZED (
        SELECT r.id, r.model_version_id, r.query, autoembed._query_digest(r.query) AS digest
        FROM autoembed.query_request AS r
        WHERE r.error IS NULL AND r.model_version_id = ANY (version_ids)
        ORDER BY r.id
        LIMIT n
        FOR UPDATE SKIP LOCKED
    ), hit AS (
        SELECT c.id FROM claimed AS c
        WHERE EXISTS (SELECT 1 FROM autoembed.query_cache AS q
                      WHERE q.model_version_id = c.model_version_id AND q.query_digest = c.digest
                        AND q.query = c.query)
    ), touched AS (
        UPDATE autoembed.query_cache AS q SET last_used_at = now()
        FROM claimed AS c
        WHERE c.id IN (SELECT h.id FROM hit AS h)
          AND q.model_version_id = c.model_version_id AND q.query_digest = c.digest
    ), answered AS (
        DELETE FROM autoembed.query_request AS r WHERE r.id IN (SELECT h.id FROM hit AS h)
    )
    SELECT c.id, c.model_version_id, c.query FROM claimed AS c
    -- held until the answer commits: the asking session waits on it
    CROSS JOIN LATERAL autoembed._query_lock(c.id) AS k(lock_key)
    CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(k.lock_key[1], k.lock_key[2])) AS l
    WHERE c.id NOT IN (SELECT h.id FROM hit AS h)
    ORDER BY c.id;
END
$$;

-- Answer claimed requests: cache each (model version, query)'s embedding
-- and delete the requests. Commit asynchronously: a lost answer is only asked again.
CREATE OR REPLACE FUNCTION autoembed.answer_query_requests(
    ids bigint[], version_ids int[], queries text[], embeddings @extschema:vector@.vector[])
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
    n int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT format('model version %s has %s dimensions, not %s', a.version_id, mv.dimensions,
                  @extschema:vector@.vector_dims(a.embedding))
    INTO bad
    FROM unnest(version_ids, embeddings) AS a(version_id, embedding)
    JOIN autoembed.model_version AS mv ON mv.id = a.version_id
    WHERE @extschema:vector@.vector_dims(a.embedding) <> mv.dimensions
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: cannot cache a query embedding: %', bad USING ERRCODE = 'datatype_mismatch';
    END IF;
    INSERT INTO autoembed.query_cache AS c (model_version_id, query_digest, query, embedding)
    SELECT DISTINCT ON (a.version_id, autoembed._query_digest(a.query))
           a.version_id, autoembed._query_digest(a.query), a.query, a.embedding
    FROM unnest(version_ids, queries, embeddings) AS a(version_id, query, embedding)
    ORDER BY a.version_id, autoembed._query_digest(a.query)
    ON CONFLICT (model_version_id, query_digest) DO UPDATE
        SET query = EXCLUDED.query, embedding = EXCLUDED.embedding,
            created_at = now(), last_used_at = now();
    DELETE FROM autoembed.query_request AS r WHERE r.id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Claimed requests a worker could not embed: the asking session reports the error.
CREATE OR REPLACE FUNCTION autoembed.fail_query_requests(ids bigint[], error text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    UPDATE autoembed.query_request AS r SET error = left(coalesce(fail_query_requests.error, 'unknown error'), 4000)
    WHERE r.id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Keep the cache bounded: per model version the max_entries most recently
-- used entries (none for model versions no vectorizer version uses); drop
-- requests older than request_age (their sessions stopped waiting long ago).
CREATE OR REPLACE FUNCTION autoembed.prune_query_cache(
    max_entries int DEFAULT 10000, request_age interval DEFAULT '10 minutes',
    OUT cache_entries bigint, OUT requests bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF max_entries IS NULL OR max_entries < 0 THEN
        RAISE EXCEPTION 'autoembed: max_entries must be at least 0, got %', coalesce(max_entries::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH ranked AS (
        SELECT c.ctid AS row_id, c.model_version_id,
               row_number() OVER (PARTITION BY c.model_version_id ORDER BY c.last_used_at DESC) AS n
        FROM autoembed.query_cache AS c
    ), doomed AS (
        SELECT d.row_id FROM ranked AS d
        WHERE d.n > max_entries
           OR NOT EXISTS (SELECT 1 FROM autoembed.vectorizer_version AS v
                          WHERE v.model_version_id = d.model_version_id)
    )
    DELETE FROM autoembed.query_cache AS c WHERE c.ctid IN (SELECT d.row_id FROM doomed AS d);
    GET DIAGNOSTICS cache_entries = ROW_COUNT;
    DELETE FROM autoembed.query_request AS r WHERE r.requested_at < now() - request_age;
    GET DIAGNOSTICS requests = ROW_COUNT;
END
$$;
