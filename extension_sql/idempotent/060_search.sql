-- Semantic search, and what every search function shares.
--
-- Search functions run as the caller (SECURITY INVOKER) and keep only rows the
-- caller can see in the source table, so its privileges and row-level
-- security decide what comes back. They are STABLE: every statement inside
-- sees the caller's snapshot, so statistics and data always agree.
-- Results: one row per source row (its best chunk), or per chunk with
-- chunks => true; pk is the source row's primary key as jsonb; rank 1 is best.

-- Every search also takes, after version:
--   predicate  a condition on the source table's columns, in SQL, e.g.
--              $$status IN ('open', 'pending') AND created_at > now() - interval '7 days'$$:
--              kept while ranking, like filter, so k rows come back when k
--              match. Evaluated as the caller, on the source rows the caller
--              may read (its privileges and row-level security hold), with
--              the source row as alias s; columns may be named bare, other
--              tables and functions by schema (search_path is pg_catalog).
--   skip       rows to pass over first (a page: k => 10, skip => 20 gives
--              ranks 21..30); ranks stay those of the whole ranking.
--   min_score  only hits scoring at least this (in the search's own scale).
-- Ties are broken by the primary key, then chunk_no, so pages of one
-- ranking never overlap or leave a row out.

-- Signatures before predicate, skip and min_score.
DROP FUNCTION IF EXISTS autoembed._check_search_args(int, jsonb, boolean);
DROP FUNCTION IF EXISTS autoembed._visible(autoembed.vectorizer, text, int);
DROP FUNCTION IF EXISTS autoembed._rank_hits(autoembed.vectorizer, text, boolean, int);
DROP FUNCTION IF EXISTS autoembed.search(text, @extschema:vector@.vector, int, jsonb, boolean, text);

CREATE OR REPLACE FUNCTION autoembed._check_search_args(k int, filter jsonb, chunks boolean, skip int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF k IS NULL THEN
        RAISE EXCEPTION 'autoembed: k must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF k < 0 THEN
        RAISE EXCEPTION 'autoembed: k must not be negative, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF skip IS NULL OR skip < 0 THEN
        RAISE EXCEPTION 'autoembed: skip must be 0 or more, got %', coalesce(skip::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k > 10000 THEN
        RAISE EXCEPTION 'autoembed: k must be at most 10000, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k::bigint + skip > 10000 THEN
        RAISE EXCEPTION 'autoembed: k + skip must be at most 10000, got % + %', k, skip
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Page deeper with a predicate on the last score or key seen (keyset pagination).';
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

-- Refuse a search the caller may not run with an error naming what to grant
-- (autoembed.grant_search, 080_grants.sql), rather than "permission denied
-- for table ..." from deep inside its query: SELECT on the tables of the
-- version the search reads (the embeddings; for kind 'bm25', which hybrid
-- search is too, the postings as well; kind 'semantic' the embeddings only),
-- and on every column of the source table, which searches join back to.
CREATE OR REPLACE FUNCTION autoembed._check_search_privilege(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, kind text)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing text;
    source_name name;
    grant_source text;
    may_read_source boolean;
    bm25 boolean := kind = 'bm25';
BEGIN
    IF kind IS NULL OR kind NOT IN ('semantic', 'bm25') THEN
        RAISE EXCEPTION 'autoembed: unknown kind of search "%"', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The common case, in simple expressions (a few microseconds).
    IF has_table_privilege(v.source, 'SELECT')
       AND has_table_privilege(format('autoembed.%I', ver.embeddings_table), 'SELECT')
       AND (NOT bm25 OR has_table_privilege(format('autoembed.%I', ver.postings_table), 'SELECT'))
    THEN
        RETURN;
    END IF;
    -- SELECT on every column is as good as on the table.
    may_read_source := has_table_privilege(v.source, 'SELECT')
        OR NOT EXISTS (SELECT FROM pg_attribute AS a
                       WHERE a.attrelid = v.source AND a.attnum > 0 AND NOT a.attisdropped
                         AND NOT has_column_privilege(v.source, a.attnum, 'SELECT'));
    SELECT string_agg(format('autoembed.%I', t), ', ') INTO missing
    FROM unnest(ARRAY[ver.embeddings_table]
                || CASE WHEN bm25 THEN ARRAY[ver.postings_table] ELSE '{}' END) AS t
    WHERE NOT has_table_privilege(format('autoembed.%I', t), 'SELECT');
    IF missing IS NULL AND may_read_source THEN
        RETURN;
    END IF;
    SELECT c.relname INTO source_name FROM pg_class AS c WHERE c.oid = v.source;
    grant_source := format('GRANT SELECT ON %s TO %I;', v.source, current_user);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: role "%" may not search vectorizer "%"', current_user, v.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('It has no SELECT on %s.', missing),
                  HINT = format('The owner of the vectorizer runs: SELECT autoembed.grant_search(%L, %L);',
                                v.name, current_user)
                      || CASE WHEN may_read_source THEN ''
                              ELSE ' And, as searches return only rows the role may read, the owner of '
                                   || v.source::text || ': ' || grant_source END;
    END IF;
    RAISE EXCEPTION 'autoembed: permission denied for table %: role "%" may not read the rows vectorizer "%" embeds',
        source_name, current_user, v.name
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Searches return only rows the role may read; the owner of ' || v.source::text
                  || ' runs: ' || grant_source;
END
$$;

-- Refuse a predicate that is not a condition on the source table, with the
-- server's own message (a column that does not exist, a syntax error, ...):
-- it is run once on no rows, as the caller.
CREATE OR REPLACE FUNCTION autoembed._check_predicate(v autoembed.vectorizer, predicate text)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    message text;
    state text;
BEGIN
    IF predicate IS NULL THEN
        RETURN;
    END IF;
    IF btrim(predicate) = '' THEN
        RAISE EXCEPTION 'autoembed: predicate must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL for no predicate, or a condition such as predicate => $p$status = ''open''$p$.';
    END IF;
    BEGIN
        EXECUTE format(E'SELECT 1 FROM %s AS s WHERE (%s\n) LIMIT 0', v.source, predicate);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
        RAISE EXCEPTION 'autoembed: predicate is not a condition on %: %', v.source, message
            USING ERRCODE = state,
                  DETAIL = format('predicate => %L', predicate),
                  HINT = 'A predicate is a boolean SQL expression over the columns of ' || v.source::text
                      || ' (the row is alias s), e.g. s.status IN (''open'', ''pending''); it runs with'
                      || ' search_path pg_catalog, so other tables and functions need their schema (public.tags).';
    END;
END
$$;

-- SQL text: the caller can see source row s, and it matches the filter $n
-- and the predicate (SQL, checked by _check_predicate; on a line of its own,
-- so a trailing comment in it comments nothing of ours out).
CREATE OR REPLACE FUNCTION autoembed._visible(
    v autoembed.vectorizer, alias text, filter_param int, predicate text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('EXISTS (SELECT 1 FROM %s AS s WHERE %s AND ($%s::jsonb IS NULL OR pg_catalog.to_jsonb(s) @> $%s)%s)',
                  v.source, autoembed._pk_join(v, 's', alias), filter_param, filter_param,
                  CASE WHEN predicate IS NULL THEN '' ELSE format(E' AND (%s\n)', predicate) END)
$$;

-- SQL that keeps the best chunk per source row (or every chunk) scoring at
-- least $<min_param> (when not NULL), orders and cuts at $<k_param>,
-- returning one row: the results as a JSON array of [pk, chunk_no, chunk,
-- score] in rank order, how many hits there were, how many distinct rows (or
-- chunks) at least that good they held, and the weakest hit's score.
-- hits: SQL yielding the key columns, chunk_no, chunk and score (higher is better).
CREATE OR REPLACE FUNCTION autoembed._rank_hits(
    v autoembed.vectorizer, hits text, chunks boolean, k_param int, min_param int)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        WITH hits AS MATERIALIZED (%1$s),
        best AS MATERIALIZED (SELECT * FROM (%2$s) AS b WHERE $%6$s::float8 IS NULL OR b.score >= $%6$s),
        top AS (SELECT * FROM best AS b ORDER BY b.score DESC, %4$s, b.chunk_no LIMIT $%5$s)
        SELECT coalesce(jsonb_agg(jsonb_build_array(%3$s, b.chunk_no, b.chunk, b.score)
                                  ORDER BY b.score DESC, %4$s, b.chunk_no), '[]'),
               (SELECT count(*) FROM hits), (SELECT count(*) FROM best), (SELECT min(h.score) FROM hits AS h)
        FROM top AS b
        $q$,
        hits,
        CASE WHEN chunks THEN 'SELECT * FROM hits'
             ELSE format('SELECT DISTINCT ON (%1$s) h.* FROM hits AS h ORDER BY %1$s, h.score DESC, h.chunk_no',
                         autoembed._pk_fragment(v, 'h.%1$I')) END,
        autoembed._pk_json(v, 'b'), autoembed._pk_fragment(v, 'b.%1$I'), k_param, min_param)
$$;

-- The rows of a _rank_hits result, ranked 1..n.
CREATE OR REPLACE FUNCTION autoembed._unpack_hits(results jsonb)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.hit -> 0, (r.hit ->> 1)::int, r.hit ->> 2, (r.hit ->> 3)::double precision, r.ord
    FROM jsonb_array_elements(results) WITH ORDINALITY AS r(hit, ord)
$$;

-- How many candidates a search of storage binary takes from the bit index
-- for each chunk it wants, to re-rank them by the full vectors
-- (benchmarks/million.py: recall@10 against exact search by candidates).
CREATE OR REPLACE FUNCTION autoembed._binary_candidates(fetch_n int)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least(greatest(fetch_n * 4, 200), 1000000)
$$;

-- SQL yielding the key columns, chunk_no, chunk and score (higher is
-- better) of the $<limit_param> chunks of version ver nearest to the query
-- embedding $1, of model version $2, that pass `visible` (SQL on alias e),
-- nearest first, by the version's index (035_version_tables.sql): the
-- vectors themselves (vector, halfvec: the query is cast to halfvec, so the
-- index serves it), or for binary the nearest _binary_candidates by Hamming
-- distance of their bits, re-ranked exactly by the full vectors.
CREATE OR REPLACE FUNCTION autoembed._nearest_sql(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, visible text, limit_param int)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT %1$s, e.chunk_no, e.chunk, %2$s(e.embedding OPERATOR(@extschema:vector@.%3$s) $1) AS score
        FROM %4$s AS e
        WHERE e.model_version_id = $2 AND %5$s
        ORDER BY e.embedding OPERATOR(@extschema:vector@.%3$s) $1
        LIMIT $%6$s
        $q$,
        autoembed._pk_fragment(v, 'e.%1$I'),
        CASE v.distance WHEN 'cosine' THEN '1 - ' ELSE '- ' END,
        CASE v.distance WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->' ELSE '<#>' END,
        CASE WHEN ver.storage = 'binary' THEN format(
            '(SELECT * FROM autoembed.%1$I AS e WHERE e.model_version_id = $2 AND %2$s '
            'ORDER BY @extschema:vector@.binary_quantize(e.embedding)::bit(%3$s) '
            'OPERATOR(@extschema:vector@.<~>) @extschema:vector@.binary_quantize($1) '
            'LIMIT autoembed._binary_candidates($%4$s))',
            ver.embeddings_table, visible, ver.dimensions, limit_param)
        ELSE format('autoembed.%I', ver.embeddings_table) END,
        CASE WHEN ver.storage = 'binary' THEN 'true' ELSE visible END,
        limit_param)
$$;

-- The k source rows nearest to query_embedding. score: cosine similarity
-- (cosine), inner product (inner_product) or negated distance (l2).
-- version: the active version (NULL), or another one by number, model or
-- tag (047_lifecycle.sql); the query embedding must be that version's.
CREATE OR REPLACE FUNCTION autoembed.search(
    name text, query_embedding @extschema:vector@.vector, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, chunks boolean DEFAULT false, version text DEFAULT NULL,
    predicate text DEFAULT NULL, skip int DEFAULT 0, min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET hnsw.iterative_scan = 'relaxed_order'
-- The planner underrates the cost of a distance computation and, for tables
-- of some thousands of chunks, would compute one per chunk and sort rather
-- than walk the HNSW index (54 ms instead of 10 ms at k = 100 on SciFact).
SET enable_seqscan = off
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
    fetch_n int;
    found_rows int;
    candidates int;
    weakest double precision;
    results jsonb;
    want int := k + skip;   -- rows ranked; the first skip are passed over
    old_ef text := current_setting('hnsw.ef_search', true);
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks, skip);
    PERFORM autoembed._check_search_privilege(v, ver, 'semantic');
    PERFORM autoembed._check_predicate(v, predicate);
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION 'autoembed: query_embedding must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF @extschema:vector@.vector_dims(query_embedding) <> ver.dimensions THEN
        RAISE EXCEPTION 'autoembed: the query embedding has % dimensions but version % of vectorizer "%" (%) stores %',
            @extschema:vector@.vector_dims(query_embedding), ver.ordinal, v.name, ver.model, ver.dimensions
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF k = 0 OR ver.model_version_id IS NULL THEN
        RETURN;
    END IF;
    -- The nearest visible chunks (pgvector's iterative scan applies the
    -- visibility check, filter and predicate while walking the index),
    -- widening until they hold k + skip distinct rows scoring at least
    -- min_score, or run out, or the weakest fetched is below min_score.
    fetch_n := CASE WHEN chunks THEN want ELSE want * 4 + 16 END;
    LOOP
        -- ef_search: twice the chunks fetched, at least 200 (recall@10 0.97 against
        -- exact kNN at 100k chunks, benchmarks/latency.py; 0.94 with ef = fetch_n);
        -- binary: the candidates it re-ranks (benchmarks/million.py)
        PERFORM set_config('hnsw.ef_search', least(greatest(
            CASE WHEN ver.storage = 'binary' THEN autoembed._binary_candidates(fetch_n) ELSE 2 * fetch_n END,
            200), 1000)::text, true);
        EXECUTE autoembed._rank_hits(v, autoembed._nearest_sql(v, ver, autoembed._visible(v, 'e', 4, predicate), 3),
            chunks, 5, 6)
            INTO results, candidates, found_rows, weakest
            USING query_embedding, ver.model_version_id, fetch_n, filter, want, min_score;
        EXIT WHEN found_rows >= want OR candidates < fetch_n OR fetch_n >= 1000000
               OR weakest < min_score;
        fetch_n := fetch_n * 4;
    END LOOP;
    PERFORM set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
    RETURN QUERY SELECT * FROM autoembed._unpack_hits(results) AS h WHERE h.rank > skip;
END
$$;
