-- Text queries from SQL, the asking side: the dblink loopback connection
-- over which a session commits its requests and waits for the answers
-- (067_query_embedding.sql explains the whole path), embed_query(), and the
-- one-time set-up of loopback credentials for roles that are not superusers.

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

-- Ask the workers to embed a query for version ver of vectorizer v (with its
-- model version), and wait for the answer.
CREATE OR REPLACE FUNCTION autoembed._embed_query_by_worker(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, query text)
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
                          ver.model_version_id, query);
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
                       request_id, ver.model_version_id, query,
                       least(1000, greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)))::int);
        EXECUTE format('SELECT t.embedding, t.error FROM %I.dblink($1, $2) AS t(embedding @extschema:vector@.vector, error text)', dbl)
            USING conn, poll INTO embedding, error;
        IF embedding IS NOT NULL THEN
            RETURN embedding;
        END IF;
        SELECT mv.tag INTO tag FROM autoembed.model_version AS mv WHERE mv.id = ver.model_version_id;
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
-- vectorizer's stored vectors (of the active version, or of `version`,
-- 047_lifecycle.sql): from the cache, or from a running worker.
CREATE OR REPLACE FUNCTION autoembed.embed_query(name text, query text, version text DEFAULT NULL)
RETURNS @extschema:vector@.vector
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
    cached record;
BEGIN
    PERFORM autoembed._check_query_text(query);
    IF ver.model_version_id IS NULL THEN
        RAISE EXCEPTION 'autoembed: version % of vectorizer "%" (%) has embedded nothing yet, so there is no model version to embed the query with',
            ver.ordinal, v.name, ver.model
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Start a worker (autoembed worker --db URL) and let it embed some rows; '
                      || 'SELECT * FROM autoembed.vectorizer_versions shows progress.';
    END IF;
    SELECT * INTO cached FROM autoembed._cached_query_embedding(ver.model_version_id, query);
    IF cached.embedding IS NOT NULL THEN
        IF cached.stale THEN
            -- Keep a popular query from being pruned; never fail a search for it.
            BEGIN
                PERFORM autoembed._touch_through_loopback(ver.model_version_id, query);
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
        END IF;
        RETURN cached.embedding;
    END IF;
    RETURN autoembed._embed_query_by_worker(v, ver, query);
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

-- ------------------------------------------------------------ set-up

-- The start of the foreign server's comment, which ends with the loopback role.
CREATE OR REPLACE FUNCTION autoembed._loopback_comment_prefix()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'autoembed: text queries log in over this server as role '
$$;

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
    -- Only superusers can read the mapping's options: the comment tells
    -- check_query_loopback() run by anyone which role the loopback logs in as.
    EXECUTE format('COMMENT ON SERVER autoembed_loopback IS %L',
                   autoembed._loopback_comment_prefix() || role_name);
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
    IF mapped_role IS NULL THEN
        -- not a superuser: the mapping's options are hidden; its comment says
        SELECT substr(d.description, length(autoembed._loopback_comment_prefix()) + 1) INTO mapped_role
        FROM pg_foreign_server AS s
        JOIN pg_description AS d ON d.objoid = s.oid AND d.classoid = 'pg_foreign_server'::regclass
        WHERE s.srvname = 'autoembed_loopback'
          AND starts_with(d.description, autoembed._loopback_comment_prefix());
    END IF;
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
