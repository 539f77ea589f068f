-- Privileges on autoembed's own objects.
--
-- The catalog is readable by everyone, like pg_catalog: search functions run
-- as the caller and must look up a vectorizer by name. What a caller may
-- read of the data is decided by the source table's privileges and row-level
-- security (search joins back to it) and by grants on each vectorizer's
-- embeddings table, which PUBLIC does not get.
GRANT USAGE ON SCHEMA autoembed TO PUBLIC;
GRANT SELECT ON autoembed.model, autoembed.model_version, autoembed.vectorizer,
                autoembed.vectorizer_version TO PUBLIC;

-- Let a role search a vectorizer: SELECT on the view of its active chunks
-- and on every version's embeddings, BM25 postings and statistics (and on
-- those of versions made later: their grantees are the view's). What the
-- role then sees is still limited by its own privileges and row-level
-- security on the source table (searches join back to it). BM25 statistics
-- (N, df, avgdl) are computed over all rows, like a search engine's index
-- statistics.
CREATE OR REPLACE FUNCTION autoembed.grant_search(name text, role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('GRANT SELECT ON autoembed.%I TO %s', v.embeddings_table, role);
    PERFORM autoembed._grant_searchers(v, ver)
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
END
$$;

CREATE OR REPLACE FUNCTION autoembed.revoke_search(name text, role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('REVOKE SELECT ON autoembed.%I FROM %s', v.embeddings_table, role);
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id LOOP
        EXECUTE format('REVOKE SELECT ON autoembed.%I, autoembed.%I, autoembed.%I FROM %s',
            ver.embeddings_table, ver.postings_table, ver.stats_table, role);
    END LOOP;
END
$$;

-- SELECT on a version's tables for every role that may search the
-- vectorizer (the grantees of its view, owner aside).
CREATE OR REPLACE FUNCTION autoembed._grant_searchers(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE c.oid = to_regclass(format('autoembed.%I', v.embeddings_table))
          AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON autoembed.%I, autoembed.%I, autoembed.%I TO %s',
            ver.embeddings_table, ver.postings_table, ver.stats_table,
            CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE grantee::text END);
    END LOOP;
END
$$;

-- ------------------------------------------------------------------ workers
--
-- Three roles (see README, "Security"):
--   owner   installs autoembed and creates vectorizers (it owns the source
--           tables or at least may create triggers on them);
--   worker  runs `autoembed worker`: no superuser, no privilege on any source
--           table (it reads them through each vectorizer's SECURITY DEFINER
--           source reader), only what the queue and the embeddings need;
--   reader  searches: SELECT on the source table (its RLS applies) and
--           autoembed.grant_search(name, role).
-- A worker role is one autoembed.grant_worker(role) was given to: it is
-- marked by its UPDATE privilege on autoembed.vectorizer.drains_started, and
-- create_vectorizer() grants each new vectorizer's objects to every such role.

-- The columns of autoembed.vectorizer and autoembed.vectorizer_version a worker writes.
CREATE OR REPLACE FUNCTION autoembed._worker_columns()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'drains_started'
$$;

CREATE OR REPLACE FUNCTION autoembed._worker_version_columns()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'model_version_id, state, completed_at, activated_at, retired_at, last_claim_at, '
        || 'last_error, last_error_at, bm25_ref_avgdl'
$$;

-- The roles grant_worker() was given to.
CREATE OR REPLACE FUNCTION autoembed._worker_roles()
RETURNS TABLE (role regrole)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT a.grantee::regrole
    FROM pg_attribute AS att CROSS JOIN LATERAL aclexplode(att.attacl) AS a
    WHERE att.attrelid = 'autoembed.vectorizer'::regclass AND att.attname = 'drains_started'
      AND a.privilege_type = 'UPDATE' AND a.grantee <> 0
$$;

-- What a worker role needs of one vectorizer (and of each of its versions).
CREATE OR REPLACE FUNCTION autoembed._grant_worker_objects(v autoembed.vectorizer, role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT SELECT, DELETE ON autoembed.%I TO %s', v.inbox_table, role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION autoembed.%I(jsonb, boolean) TO %s',
        autoembed._source_function(v), role);
    PERFORM autoembed._grant_worker_version(ver, role)
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
END
$$;

CREATE OR REPLACE FUNCTION autoembed._grant_worker_version(ver autoembed.vectorizer_version, role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON autoembed.%I, autoembed.%I TO %s',
        ver.queue_table, ver.postings_table, role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON autoembed.%I, autoembed.%I TO %s',
        ver.embeddings_table, ver.stats_table, role);
END
$$;

-- Let a role run workers (`autoembed worker`, `autoembed worker --once`, the
-- query service) for every vectorizer, present and future. Run it as the
-- owner of autoembed's objects. The role needs no other privilege: in
-- particular none on the source tables. Give it a statement timeout too:
--   ALTER ROLE worker SET statement_timeout = '5min';
CREATE OR REPLACE FUNCTION autoembed.grant_worker(role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('GRANT UPDATE (%s) ON autoembed.vectorizer TO %s', autoembed._worker_columns(), role);
    EXECUTE format('GRANT UPDATE (%s) ON autoembed.vectorizer_version TO %s',
        autoembed._worker_version_columns(), role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON autoembed.model_version TO %s', role);
    EXECUTE format('GRANT SELECT ON autoembed.vectorizer_status, autoembed.vectorizer_versions TO %s', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON autoembed.query_cache, autoembed.query_request TO %s',
        role);
    FOR v IN SELECT * FROM autoembed.vectorizer AS x ORDER BY x.id LOOP
        PERFORM autoembed._grant_worker_objects(v, role);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION autoembed.revoke_worker(role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOR v IN SELECT * FROM autoembed.vectorizer AS x ORDER BY x.id LOOP
        EXECUTE format('REVOKE ALL ON autoembed.%I FROM %s', v.inbox_table, role);
        EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I(jsonb, boolean) FROM %s',
            autoembed._source_function(v), role);
        FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id LOOP
            EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I, autoembed.%I, autoembed.%I FROM %s',
                ver.queue_table, ver.embeddings_table, ver.postings_table, ver.stats_table, role);
        END LOOP;
    END LOOP;
    EXECUTE format('REVOKE UPDATE (%s) ON autoembed.vectorizer FROM %s', autoembed._worker_columns(), role);
    EXECUTE format('REVOKE UPDATE (%s) ON autoembed.vectorizer_version FROM %s',
        autoembed._worker_version_columns(), role);
    EXECUTE format('REVOKE INSERT, UPDATE ON autoembed.model_version FROM %s', role);
    EXECUTE format('REVOKE SELECT ON autoembed.vectorizer_status, autoembed.vectorizer_versions FROM %s', role);
    EXECUTE format('REVOKE ALL ON autoembed.query_cache, autoembed.query_request FROM %s', role);
END
$$;
