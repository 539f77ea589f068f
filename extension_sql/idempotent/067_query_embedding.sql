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

-- ------------------------------------------------------------ the loopback

-- The schema dblink is installed in (any schema, e.g. extensions on Supabase).
CREATE OR REPLACE FUNCTION autoembed._dblink_schema()
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_schema name;
BEGIN
    SELECT n.nspname INTO found_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'dblink';
    IF found_schema IS NULL THEN
        RAISE EXCEPTION 'autoembed: text queries from SQL need the dblink extension, which database "%" does not have',
            current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A superuser runs: CREATE EXTENSION dblink;  (autoembed install does when it can.) '
                      || 'Or embed the query yourself and pass the vector: '
                      || 'autoembed.search(name, query_embedding, k).';
    END IF;
    RETURN found_schema;
END
$$;

-- A libpq connection-string value, quoted.
CREATE OR REPLACE FUNCTION autoembed._conninfo_value(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '''' || replace(replace(value, '\', '\\'), '''', '\''') || ''''
$$;

-- Without a configured server: this database, over the server's own unix
-- socket, as the current (super)user.
CREATE OR REPLACE FUNCTION autoembed._local_conninfo()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    socket_dir text := nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), '');
BEGIN
    IF socket_dir IS NULL THEN
        RAISE EXCEPTION 'autoembed: no loopback connection for text queries: the server has no unix socket to connect back through'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A superuser runs: SELECT autoembed.setup_query_loopback(host => ''localhost'');';
    END IF;
    RETURN format('host=%s port=%s dbname=%s user=%s application_name=%s',
                  autoembed._conninfo_value(socket_dir),
                  autoembed._conninfo_value(current_setting('port')),
                  autoembed._conninfo_value(current_database()),
                  autoembed._conninfo_value(current_user),
                  autoembed._conninfo_value('autoembed loopback'));
END
$$;

-- The session's loopback connection (one per role the session runs as),
-- opened on first use and kept; reopen => true drops a broken one first.
CREATE OR REPLACE FUNCTION autoembed._query_loopback(dblink_schema name, reopen boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    conn text := 'autoembed_loopback:' || current_user;
    is_open boolean;
    target text;
    msg text;
    detail text;
BEGIN
    EXECUTE format('SELECT $1 = ANY (%I.dblink_get_connections())', dblink_schema) USING conn INTO is_open;
    IF coalesce(is_open, false) THEN
        IF NOT reopen THEN
            RETURN conn;
        END IF;
        EXECUTE format('SELECT %I.dblink_disconnect($1)', dblink_schema) USING conn;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'autoembed_loopback') THEN
        target := 'autoembed_loopback';
    ELSIF (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user) THEN
        target := autoembed._local_conninfo();
    ELSE
        RAISE EXCEPTION 'autoembed: text queries from SQL need a loopback connection, and none is configured'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'dblink lets a role other than a superuser connect only with a password.',
                  HINT = 'A superuser runs once: SELECT autoembed.setup_query_loopback();  '
                      || '(or: autoembed setup-queries --db URL). Or embed the query yourself and pass '
                      || 'the vector: autoembed.search(name, query_embedding, k).';
    END IF;
    BEGIN
        EXECUTE format('SELECT %I.dblink_connect($1, $2)', dblink_schema) USING conn, target;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'autoembed: cannot open the loopback connection for text queries (%): %',
            CASE WHEN target = 'autoembed_loopback' THEN 'foreign server autoembed_loopback'
                 ELSE 'this server''s unix socket, as ' || current_user END,
            msg
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = coalesce(nullif(detail, ''), ''),
                  HINT = 'A superuser runs: SELECT autoembed.setup_query_loopback();  it reports what '
                      || 'pg_hba.conf must allow (dblink needs password authentication for non-superusers).';
    END;
    RETURN conn;
END
$$;

-- autoembed.query_timeout: how long embed_query() waits for a worker
-- (any interval, e.g. SET autoembed.query_timeout = '30s'; a bare number is seconds).
CREATE OR REPLACE FUNCTION autoembed._query_timeout()
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text := nullif(btrim(current_setting('autoembed.query_timeout', true)), '');
    timeout interval;
BEGIN
    IF raw IS NULL THEN
        RETURN interval '5 seconds';
    END IF;
    BEGIN
        timeout := CASE WHEN raw ~ '^[0-9]+(\.[0-9]*)?$' THEN make_interval(secs => raw::float8)
                        ELSE raw::interval END;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        timeout := NULL;
    END;
    IF timeout IS NULL OR timeout <= interval '0' THEN
        RAISE EXCEPTION 'autoembed.query_timeout must be a positive interval such as ''5s'', got ''%''', raw
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN timeout;
END
$$;

-- Ask the workers to embed a query with model version v.active_version_id,
-- and wait for the answer.
CREATE OR REPLACE FUNCTION autoembed._embed_query_by_worker(v autoembed.vectorizer, query text)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dbl name := autoembed._dblink_schema();
    timeout interval := autoembed._query_timeout();
    started timestamptz := clock_timestamp();
    deadline timestamptz := started + timeout;
    submit text := format('SELECT autoembed._submit_query_request(%s::pg_catalog.int4, %L::pg_catalog.text)',
                          v.active_version_id, query);
    conn text;
    request_id bigint;
    poll text;
    now_ts timestamptz;
    embedding @extschema:vector@.vector;
    error text;
    tag text;
BEGIN
    conn := autoembed._query_loopback(dbl);
    BEGIN
        EXECUTE format('SELECT t.id FROM %I.dblink($1, $2) AS t(id bigint)', dbl)
            USING conn, submit INTO request_id;
    EXCEPTION WHEN OTHERS THEN
        -- A kept connection can break (server restart, idle timeout, a
        -- cancelled poll): open a fresh one and try once more.
        conn := autoembed._query_loopback(dbl, reopen => true);
        EXECUTE format('SELECT t.id FROM %I.dblink($1, $2) AS t(id bigint)', dbl)
            USING conn, submit INTO request_id;
    END;
    LOOP
        -- wait on the worker's claim (at most 1 s at a time, to check the deadline)
        poll := format('SELECT * FROM autoembed._await_query_answer(%s::pg_catalog.int8, %s::pg_catalog.int4, %L::pg_catalog.text, %s)',
                       request_id, v.active_version_id, query,
                       least(1000, greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)))::int);
        EXECUTE format('SELECT t.embedding, t.error FROM %I.dblink($1, $2) AS t(embedding @extschema:vector@.vector, error text)', dbl)
            USING conn, poll INTO embedding, error;
        IF embedding IS NOT NULL THEN
            RETURN embedding;
        END IF;
        SELECT mv.tag INTO tag FROM autoembed.model_version AS mv WHERE mv.id = v.active_version_id;
        IF error IS NOT NULL THEN
            RAISE EXCEPTION 'autoembed: the worker could not embed the query for vectorizer "%" (model version %): %',
                v.name, tag, error
                USING ERRCODE = 'external_routine_exception';
        END IF;
        now_ts := clock_timestamp();
        IF now_ts >= deadline THEN
            RAISE EXCEPTION 'autoembed: no worker answered within % s to embed the query for vectorizer "%" (model version %)',
                extract(epoch FROM timeout)::float8, v.name, tag
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Start a worker that loads this model: autoembed worker --db URL (a Celery '
                          || 'worker; its query service answers text queries), or celery -A '
                          || 'autoembed.worker.app worker, or only the query service: autoembed '
                          || 'query-server --db URL. Workers with AUTOEMBED_QUERY_SERVICE=0 do not answer. '
                          || 'SET autoembed.query_timeout = ''30s'' waits longer (while a worker loads its model).';
        END IF;
        -- Not claimed yet: ~1 ms sleeps at first (pg_sleep's granularity),
        -- growing with the wait to 5 ms.
        PERFORM pg_sleep(least(greatest(extract(epoch FROM now_ts - started) / 10, 0.0005), 0.005,
                               extract(epoch FROM deadline - now_ts)));
    END LOOP;
END
$$;

-- The embedding of a text query by exactly the model version of the
-- vectorizer's stored vectors: from the cache, or from a running worker.
CREATE OR REPLACE FUNCTION autoembed.embed_query(name text, query text)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    cached record;
BEGIN
    PERFORM autoembed._check_query_text(query);
    IF v.active_version_id IS NULL THEN
        RAISE EXCEPTION 'autoembed: vectorizer "%" has embedded nothing yet, so there is no model version to embed the query with', v.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Start a worker (autoembed worker --db URL) and let it embed some rows; '
                      || 'SELECT * FROM autoembed.vectorizer_status shows progress.';
    END IF;
    SELECT * INTO cached FROM autoembed._cached_query_embedding(v.active_version_id, query);
    IF cached.embedding IS NOT NULL THEN
        IF cached.stale THEN
            -- Keep a popular query from being pruned; never fail a search for it.
            BEGIN
                PERFORM autoembed._touch_through_loopback(v.active_version_id, query);
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
        END IF;
        RETURN cached.embedding;
    END IF;
    RETURN autoembed._embed_query_by_worker(v, query);
END
$$;

CREATE OR REPLACE FUNCTION autoembed._touch_through_loopback(version_id int, query text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dbl name := autoembed._dblink_schema();
BEGIN
    EXECUTE format('SELECT %I.dblink_exec($1, $2)', dbl)
        USING autoembed._query_loopback(dbl),
              format('SELECT autoembed._touch_cached_query(%s::pg_catalog.int4, %L::pg_catalog.text)',
                     version_id, query);
END
$$;

-- ------------------------------------------------------- text overloads

-- Semantic search with a text query, embedded by embed_query().
-- search('articles', 'some text', 10) picks this variant (an untyped literal
-- prefers text); pass a vector (or cast: '[...]'::vector) for the other.
CREATE OR REPLACE FUNCTION autoembed.search(
    name text, query text, k int DEFAULT 10, filter jsonb DEFAULT NULL, chunks boolean DEFAULT false)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks);
    PERFORM autoembed._check_query_text(query);
    IF k = 0 OR v.active_version_id IS NULL THEN
        RETURN;   -- nothing to search (as the vector variant), so nothing to embed
    END IF;
    RETURN QUERY
    SELECT * FROM autoembed.search(name, autoembed.embed_query(name, query), k, filter, chunks);
END
$$;

-- Hybrid search with a text query: the text for BM25, its embedding
-- (embed_query()) for the semantic branch; options as the vector variant.
CREATE OR REPLACE FUNCTION autoembed.hybrid_search(
    name text, query text, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, fusion text DEFAULT 'convex', rrf_k int DEFAULT 60,
    semantic_weight double precision DEFAULT 0.5, candidates int DEFAULT 20,
    chunks boolean DEFAULT false, normalization text DEFAULT 'spread')
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks);
    PERFORM autoembed._check_query_text(query);
    -- The vector variant checks every option before its first use of the
    -- vector; with k = 0 it stops right there. Bad options fail before a
    -- worker is asked for anything.
    PERFORM autoembed.hybrid_search(
        name, query, array_fill(0, ARRAY[v.dimensions])::real[]::@extschema:vector@.vector, 0,
        filter, fusion, rrf_k, semantic_weight, candidates, chunks, normalization);
    IF k = 0 OR v.active_version_id IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT * FROM autoembed.hybrid_search(
        name, query, autoembed.embed_query(name, query), k,
        filter, fusion, rrf_k, semantic_weight, candidates, chunks, normalization);
END
$$;

-- ------------------------------------------------------------ set-up

-- Configure the loopback for every role (run once, as a superuser): a LOGIN
-- role with a fresh random password and no privileges, the foreign server
-- autoembed_loopback (this database by default: the server's unix socket
-- when it has one, else localhost; pass host and port to reach it another
-- way, e.g. a replica's primary), a user mapping for PUBLIC and USAGE on the
-- server for PUBLIC. Running it again makes a new password. Then, in a new
-- transaction (the loopback sees only committed roles), check_query_loopback().
CREATE OR REPLACE FUNCTION autoembed.setup_query_loopback(
    role_name name DEFAULT 'autoembed_query', host text DEFAULT NULL, port int DEFAULT NULL,
    dbname text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret text := replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    r pg_roles;
    target_host text := coalesce(host, nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''),
                                 'localhost');
    target_port text := coalesce(port::text, current_setting('port'));
    target_db text := coalesce(dbname, current_database());
BEGIN
    IF role_name IS NULL OR role_name = '' THEN
        RAISE EXCEPTION 'autoembed: role_name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM autoembed._dblink_schema();   -- names CREATE EXTENSION dblink when missing
    SELECT * INTO r FROM pg_roles AS x WHERE x.rolname = role_name;
    IF FOUND THEN
        IF r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls THEN
            RAISE EXCEPTION 'autoembed: role "%" has powers a loopback role must not have; name a dedicated role', role_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', role_name, secret);
    ELSE
        EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT '
                       'NOREPLICATION NOBYPASSRLS PASSWORD %L', role_name, secret);
        EXECUTE format('COMMENT ON ROLE %I IS %L', role_name,
                       'autoembed: the loopback role text queries connect as (no privileges)');
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), role_name);
    DROP SERVER IF EXISTS autoembed_loopback CASCADE;
    EXECUTE format('CREATE SERVER autoembed_loopback FOREIGN DATA WRAPPER dblink_fdw '
                   'OPTIONS (host %L, port %L, dbname %L, application_name %L)',
                   target_host, target_port, target_db, 'autoembed loopback');
    EXECUTE format('CREATE USER MAPPING FOR PUBLIC SERVER autoembed_loopback OPTIONS (user %L, password %L)',
                   role_name, secret);
    GRANT USAGE ON FOREIGN SERVER autoembed_loopback TO PUBLIC;
    RETURN format('autoembed_loopback -> host %s port %s dbname %s, as role %s; '
                  'now check it: SELECT autoembed.check_query_loopback();',
                  target_host, target_port, target_db, role_name);
END
$$;

-- Check the loopback as a role that is not a superuser would use it: as the
-- loopback role itself when a superuser runs this, else as the caller.
-- Returns what it found; a WARNING says what to change when it fails.
CREATE OR REPLACE FUNCTION autoembed.check_query_loopback()
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dbl name := autoembed._dblink_schema();
    probe_role text := current_user;
    mapped_role text;
    target text;
    probe_error text;
    probe_detail text;
    done boolean := false;
BEGIN
    SELECT o.option_value INTO mapped_role
    FROM pg_user_mappings AS m, pg_options_to_table(m.umoptions) AS o
    WHERE m.srvname = 'autoembed_loopback' AND m.usename = 'public' AND o.option_name = 'user';
    SELECT coalesce(string_agg(o.option_name || ' ' || o.option_value, ', '), '')
    INTO target
    FROM pg_foreign_server AS s, pg_options_to_table(s.srvoptions) AS o
    WHERE s.srvname = 'autoembed_loopback';
    IF NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'autoembed_loopback') THEN
        RAISE EXCEPTION 'autoembed: no loopback server is configured'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A superuser runs: SELECT autoembed.setup_query_loopback();';
    END IF;
    IF (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user) AND mapped_role IS NOT NULL THEN
        probe_role := mapped_role;
    END IF;
    -- The block always ends in an error, so its subtransaction takes the
    -- role change back.
    BEGIN
        PERFORM set_config('role', probe_role, true);
        EXECUTE format('SELECT %I.dblink_connect($1, $2)', dbl) USING 'autoembed_check', 'autoembed_loopback';
        EXECUTE format('SELECT * FROM %I.dblink($1, $2) AS t(embedding @extschema:vector@.vector, error text)', dbl)
            USING 'autoembed_check', 'SELECT * FROM autoembed._query_answer(0, 0, '''')';
        done := true;
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'autoembed: check done';
    EXCEPTION WHEN OTHERS THEN
        IF NOT done THEN
            GET STACKED DIAGNOSTICS probe_error = MESSAGE_TEXT, probe_detail = PG_EXCEPTION_DETAIL;
        END IF;
    END;
    BEGIN
        EXECUTE format('SELECT %I.dblink_disconnect($1)', dbl) USING 'autoembed_check';
    EXCEPTION WHEN OTHERS THEN
        NULL;   -- it did not open
    END;
    IF probe_error IS NOT NULL THEN
        RAISE WARNING 'autoembed: role "%" cannot use the loopback for text queries: %', probe_role, probe_error
            USING DETAIL = coalesce(nullif(probe_detail, ''), ''),
                  HINT = format('dblink lets a role that is not a superuser connect only when the server asks '
                                || 'for the password the user mapping holds: pg_hba.conf must say, above any '
                                || 'trust or peer line, e.g. "%s %s scram-sha-256" for the loopback role, and '
                                || 'then SELECT pg_reload_conf(). Superusers can run text queries meanwhile.',
                                CASE WHEN target LIKE '%host /%' THEN 'local all' ELSE 'host all' END,
                                coalesce(mapped_role, probe_role)
                                || CASE WHEN target LIKE '%host /%' THEN '' ELSE ' <address>' END);
        RETURN format('NOT usable by role %s (%s): %s', probe_role, target, probe_error);
    END IF;
    RETURN format('ok: role %s reaches %s', probe_role, target);
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
-- used entries (none for versions no vectorizer is active with); drop
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
           OR NOT EXISTS (SELECT 1 FROM autoembed.vectorizer AS v
                          WHERE v.active_version_id = d.model_version_id)
    )
    DELETE FROM autoembed.query_cache AS c WHERE c.ctid IN (SELECT d.row_id FROM doomed AS d);
    GET DIAGNOSTICS cache_entries = ROW_COUNT;
    DELETE FROM autoembed.query_request AS r WHERE r.requested_at < now() - request_age;
    GET DIAGNOSTICS requests = ROW_COUNT;
END
$$;
