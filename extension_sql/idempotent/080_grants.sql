-- Privileges on autoembed's own objects (docs/security.md).
--
-- The property: no role reads, through anything autoembed creates, the
-- text, chunks, lexemes or keys of source rows it could not SELECT itself
-- (tests/integration/test_security_property.py).
--
-- The catalog is readable by everyone, like pg_catalog: search functions run
-- as the caller and must look up a vectorizer by name; it holds names and
-- settings, no row data. A version's chunks and BM25 postings are under
-- row-level security: a searcher's policy shows it the chunks of the source
-- rows it can SELECT itself (the source table's privileges and row-level
-- security, applied as the searcher), a worker's shows it all of them (it
-- embeds them), a role with neither sees none; their owner is not subject to
-- it. BM25 statistics are read only through the version's term statistics
-- function (N, avgdl and the document frequency of given terms).
GRANT USAGE ON SCHEMA autoembed TO PUBLIC;
GRANT SELECT ON autoembed.model, autoembed.model_version, autoembed.vectorizer,
                autoembed.vectorizer_version TO PUBLIC;

-- Let a role search a vectorizer: SELECT on the view of its active chunks
-- and on every version's embeddings and BM25 postings, with the row-level
-- security policy that shows it only the chunks of source rows it may
-- SELECT, and the versions' term statistics (and the same on versions made
-- later: their grantees are the view's). BM25 statistics (N, df, avgdl) are
-- computed over all rows, like a search engine's index statistics: the one
-- thing a searcher learns of rows it cannot see is how many chunks hold a
-- word it asks for (docs/security.md).
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
        PERFORM autoembed._revoke_searcher(ver, role);
    END LOOP;
END
$$;

-- What every role that may search the vectorizer (the grantees of its view,
-- owner aside) gets of a version: SELECT on its chunks and postings, the
-- policies that show it the chunks of the source rows it may SELECT, and
-- its term statistics.
CREATE OR REPLACE FUNCTION autoembed._grant_searchers(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grantee oid;
    who text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee
        FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE c.oid = to_regclass(format('autoembed.%I', v.embeddings_table))
          AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        who := CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE grantee::regrole::text END;
        EXECUTE format('GRANT SELECT ON autoembed.%I, autoembed.%I TO %s',
            ver.embeddings_table, ver.postings_table, who);
        -- the statistics only through the function (searchers of earlier
        -- releases had SELECT on them)
        EXECUTE format('REVOKE ALL ON autoembed.%I FROM %s', ver.stats_table, who);
        EXECUTE format('GRANT EXECUTE ON FUNCTION autoembed.%I(int, text[]) TO %s',
            autoembed._term_stats_function(ver), who);
        -- a chunk: when its source row is one the searcher may SELECT, whole
        -- (the row is named whole, so a role that may read only some columns,
        -- the key say, gets a permission error, as from a search). OFFSET 0
        -- keeps each check a probe of the source's key: without it the
        -- planner may hash the whole visible source table once per query,
        -- when a search reads only a few chunks through its index.
        PERFORM autoembed._ensure_policy(ver.embeddings_table, autoembed._policy_name('search', grantee),
            format('FOR SELECT TO %s USING (EXISTS (SELECT FROM %s AS s WHERE %s '
                   'AND pg_catalog.num_nulls(s) >= 0 OFFSET 0))',
                   who, v.source, autoembed._pk_join(v, 's', ver.embeddings_table)));
        -- the BM25 index: a block lists the chunks of many rows, so only
        -- to a searcher that may see every row of the source, now (the
        -- others' searches scan the chunks they may see: 065_bm25.sql)
        PERFORM autoembed._ensure_policy(ver.postings_table, autoembed._policy_name('search', grantee),
            format('FOR SELECT TO %s USING ((SELECT autoembed._sees_whole_source(%s)))',
                   who, v.source::oid));
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION autoembed._revoke_searcher(ver autoembed.vectorizer_version, role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE SELECT ON autoembed.%I, autoembed.%I, autoembed.%I FROM %s',
        ver.embeddings_table, ver.postings_table, ver.stats_table, role);
    EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I(int, text[]) FROM %s',
        autoembed._term_stats_function(ver), role);
    EXECUTE format('DROP POLICY IF EXISTS %I ON autoembed.%I',
        autoembed._policy_name('search', role), ver.embeddings_table);
    EXECUTE format('DROP POLICY IF EXISTS %I ON autoembed.%I',
        autoembed._policy_name('search', role), ver.postings_table);
END
$$;

-- CREATE POLICY name ON autoembed.<tbl> <definition>, unless the table has
-- a policy of that name (installs re-run this: CREATE POLICY locks the table
-- against every reader, so it is not made anew each time).
CREATE OR REPLACE FUNCTION autoembed._ensure_policy(tbl name, policy name, definition text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_policy AS p
                   WHERE p.polrelid = format('autoembed.%I', tbl)::regclass AND p.polname = policy) THEN
        EXECUTE format('CREATE POLICY %I ON autoembed.%I %s', policy, tbl, definition);
    END IF;
END
$$;

-- The name of a role's policy of one kind (search, worker) on a version's
-- tables: by the role's oid (0: PUBLIC), so a renamed role keeps it.
CREATE OR REPLACE FUNCTION autoembed._policy_name(kind text, role oid)
RETURNS name
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('autoembed_%s_%s', kind, role)::name
$$;

-- Everything that keeps a version's data to those allowed to read it, made
-- with the version and anew by every install (idempotent): row-level
-- security on its chunks and postings, its term statistics function, and
-- the grants and policies of the worker roles and of the vectorizer's
-- searchers. Run as the owner of the version's tables.
CREATE OR REPLACE FUNCTION autoembed._secure_version(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t name;
BEGIN
    FOREACH t IN ARRAY ARRAY[ver.embeddings_table, ver.postings_table] LOOP
        IF NOT (SELECT c.relrowsecurity FROM pg_class AS c
                WHERE c.oid = format('autoembed.%I', t)::regclass) THEN
            EXECUTE format('ALTER TABLE autoembed.%I ENABLE ROW LEVEL SECURITY', t);
        END IF;
    END LOOP;
    PERFORM autoembed._create_term_stats_function(ver);
    PERFORM autoembed._grant_worker_version(ver, r.role) FROM autoembed._worker_roles() AS r;
    PERFORM autoembed._grant_searchers(v, ver);
END
$$;

-- ------------------------------------------------------------------ workers
--
-- Three roles (docs/security.md):
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
    -- it embeds every row: its policies show it every chunk and posting
    PERFORM autoembed._ensure_policy(t, autoembed._policy_name('worker', role),
        format('TO %s USING (true) WITH CHECK (true)', role))
    FROM unnest(ARRAY[ver.embeddings_table, ver.postings_table]) AS t;
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
            EXECUTE format('DROP POLICY IF EXISTS %I ON autoembed.%I',
                autoembed._policy_name('worker', role), ver.embeddings_table);
            EXECUTE format('DROP POLICY IF EXISTS %I ON autoembed.%I',
                autoembed._policy_name('worker', role), ver.postings_table);
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
