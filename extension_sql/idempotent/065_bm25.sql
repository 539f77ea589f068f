-- BM25: exact Lucene BM25 in plain SQL, over the lexemes of the vectorizer's
-- text search configuration, on the same chunks that are embedded.
--
--   score(chunk, query) = sum over query lexemes t of
--       qtf(t) * idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
--   idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
--
-- tf counts every occurrence of the lexeme in the chunk (its positions); dl is
-- the chunk's number of lexeme occurrences (stop words excluded); qtf counts
-- repeats in the query (Lucene scores a repeated term once per occurrence).
-- This is Lucene's BM25 (since Lucene 8, without the constant (k1 + 1)
-- factor, which does not change the ranking). N, avgdl and df are summed from
-- the statistics deltas of autoembed._insert_chunks / _delete_chunks, inside
-- the caller's snapshot: exact, and changed by a DELETE or UPDATE at once.
-- ts_rank and ts_rank_cd are not BM25; autoembed does not use them.

-- Per vectorizer: postings (one row per chunk and lexeme) and statistics
-- deltas (term '' holds the chunk count and total length).
CREATE OR REPLACE FUNCTION autoembed._create_bm25_tables(v autoembed.vectorizer)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE autoembed.%I (model_version_id int NOT NULL, term text NOT NULL, '
        'chunk_id bigint NOT NULL, tf int NOT NULL, doc_len int NOT NULL)',
        v.postings_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (model_version_id, term) INCLUDE (chunk_id, tf, doc_len)',
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

-- Fold a vectorizer's statistics deltas into one row per term (workers call
-- this after draining; it only makes queries faster). Returns rows removed.
CREATE OR REPLACE FUNCTION autoembed.compact_stats(name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
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
    RETURN before - after;
END
$$;

-- Set k1 and b of a vectorizer (defaults 1.2 and 0.5, tuned on SciFact's train
-- split; Anserini uses 0.9 and 0.4, Lucene 1.2 and 0.75). Takes effect at once:
-- statistics do not depend on them.
CREATE OR REPLACE FUNCTION autoembed.set_bm25(name text, k1 float8, b float8)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._check_bm25(k1, b);
    UPDATE autoembed.vectorizer AS x SET bm25_k1 = k1, bm25_b = b WHERE x.id = v.id;
END
$$;

CREATE OR REPLACE FUNCTION autoembed._check_bm25(k1 float8, b float8)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
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

-- SQL text of the CTEs every BM25 query starts with, for query text $1 and
-- model version $2: q (the query's lexemes and their counts), coll (N and
-- avgdl) and weights (each lexeme's qtf * idf, for lexemes in the collection).
CREATE OR REPLACE FUNCTION autoembed._bm25_weights(v autoembed.vectorizer)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        q AS (
            SELECT l.lexeme AS term, cardinality(l.positions)::float8 AS qtf
            FROM unnest(to_tsvector(%1$L::regconfig, $1)) AS l
        ), coll AS (
            SELECT sum(s.docs)::float8 AS n, sum(s.length)::float8 / nullif(sum(s.docs), 0) AS avgdl
            FROM autoembed.%2$I AS s WHERE s.model_version_id = $2 AND s.term = ''
        ), weights AS (
            SELECT q.term, q.qtf * ln(1 + (coll.n - d.df + 0.5) / (d.df + 0.5)) AS w
            FROM q CROSS JOIN coll
            CROSS JOIN LATERAL (
                SELECT sum(s.docs)::float8 AS df FROM autoembed.%2$I AS s
                WHERE s.model_version_id = $2 AND s.term = q.term) AS d
            WHERE d.df > 0
        )$q$, v.ts_config, v.stats_table)
$$;

-- The highest BM25 score any chunk could reach for query: the sum of its
-- lexemes' weights (each term's saturation tf / (tf + ...) stays below 1).
-- hybrid_search divides by it to put BM25 scores on a 0..1 scale.
CREATE OR REPLACE FUNCTION autoembed.bm25_max_score(name text, query text)
RETURNS double precision
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
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

-- The k source rows whose best chunk scores highest for query under BM25.
CREATE OR REPLACE FUNCTION autoembed.bm25_search(
    name text, query text, k int DEFAULT 10, filter jsonb DEFAULT NULL, chunks boolean DEFAULT false)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
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
    EXECUTE autoembed._rank_hits(v, format($q$
            WITH %1$s, scored AS (
                -- w * tf / (tf + k1 * (1 - b + b * dl / avgdl)), rearranged and summed
                -- in term order so that chunks with equal inputs get bit-equal
                -- scores (ties are then broken by key, not by rounding noise)
                SELECT p.chunk_id,
                       sum(w.w / (1 + $3 * ((1 - $4) / p.tf + $4 * (p.doc_len::float8 / p.tf) / coll.avgdl))
                           ORDER BY w.term) AS score
                FROM weights AS w CROSS JOIN coll
                JOIN autoembed.%2$I AS p ON p.model_version_id = $2 AND p.term = w.term
                GROUP BY p.chunk_id
            )
            SELECT %3$s, e.chunk_no, e.chunk, sc.score
            FROM scored AS sc JOIN autoembed.%4$I AS e ON e.chunk_id = sc.chunk_id
            WHERE %5$s
            $q$,
            autoembed._bm25_weights(v), v.postings_table, autoembed._pk_fragment(v, 'e.%1$I'),
            v.embeddings_table, autoembed._visible(v, 'e', 5)),
        chunks, 6)
        INTO results, candidates, found_rows
        USING query, v.active_version_id, v.bm25_k1, v.bm25_b, filter, k;
    RETURN QUERY SELECT * FROM autoembed._unpack_hits(results);
END
$$;
