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

-- Statistics per version (the chunks depend on the model's tokenizer): the
-- deltas of term '' hold the chunk count and total length, those of a term
-- the chunks holding it. The index the searches read is 064_bm25_index.sql.

-- A version's term statistics, the only way a searcher reaches them: for
-- model version $1, the collection (term '': chunks and their total length)
-- and the number of chunks holding each of the given terms (docs; length
-- NULL). SECURITY DEFINER, owned by the owner of the version's tables: it
-- returns counts of the terms asked for, never a list of the terms there are
-- (searchers may not read the statistics table itself). Made with the
-- version (080_grants.sql: autoembed._secure_version); its grantees are the
-- vectorizer's searchers.
CREATE OR REPLACE FUNCTION autoembed._term_stats_function(ver autoembed.vectorizer_version)
RETURNS name
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT autoembed._derived_name(ver.stats_table, '_terms')
$$;

CREATE OR REPLACE FUNCTION autoembed._create_term_stats_function(ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn name := autoembed._term_stats_function(ver);
    table_owner regrole := (SELECT c.relowner::regrole FROM pg_class AS c
                            WHERE c.oid = format('autoembed.%I', ver.stats_table)::regclass);
BEGIN
    -- The body is passed as a string literal (%L), never dollar-quoted:
    -- a quoted identifier may contain any dollar-quote tag.
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION autoembed.%1$I(model_version_id int, terms text[])
RETURNS TABLE (term text, docs float8, length float8)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS %2$L
$f$, fn, format($b$
    SELECT '', sum(s.docs)::float8, sum(s.length)::float8
    FROM autoembed.%1$I AS s WHERE s.model_version_id = $1 AND s.term = ''
    UNION ALL
    SELECT t.term, (SELECT sum(s.docs)::float8 FROM autoembed.%1$I AS s
                    WHERE s.model_version_id = $1 AND s.term = t.term), NULL
    FROM (SELECT DISTINCT u.term FROM pg_catalog.unnest($2) AS u(term) WHERE u.term <> '') AS t
$b$, ver.stats_table));
    EXECUTE format('REVOKE ALL ON FUNCTION autoembed.%I(int, text[]) FROM PUBLIC', fn);
    IF (SELECT p.proowner FROM pg_proc AS p
        WHERE p.oid = format('autoembed.%I(int, text[])', fn)::regprocedure) <> table_owner THEN
        EXECUTE format('ALTER FUNCTION autoembed.%I(int, text[]) OWNER TO %s', fn, table_owner);
    END IF;
END
$$;

DROP FUNCTION IF EXISTS autoembed._impact_expr(int, int, int);
DROP FUNCTION IF EXISTS autoembed._reimpact(autoembed.vectorizer, autoembed.vectorizer_version);

-- The average chunk length of a version now.
CREATE OR REPLACE FUNCTION autoembed._avgdl(ver autoembed.vectorizer_version)
RETURNS float8
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    avgdl float8;
BEGIN
    EXECUTE format($q$SELECT sum(length)::float8 / nullif(sum(docs), 0) FROM autoembed.%I
                      WHERE model_version_id = $1 AND term = ''$q$, ver.stats_table)
        INTO avgdl USING ver.model_version_id;
    RETURN avgdl;
END
$$;

-- Searches stay exact whatever average length the impacts assume (their
-- bounds scale by avgdl / assumed), but they are fastest while it is close.
-- compact_stats() calls this: when the average length has drifted beyond
-- -25% / +30% it rebuilds the index, but only of up to 100,000 chunks, and
-- only if nothing it must lock is busy (it never makes writers wait);
-- autoembed.optimize_bm25() does it unconditionally.
CREATE OR REPLACE FUNCTION autoembed._rebuild_if_drifted(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    avgdl float8 := autoembed._avgdl(ver);
    old_timeout text := current_setting('lock_timeout');
BEGIN
    IF avgdl IS NULL OR avgdl BETWEEN ver.bm25_ref_avgdl * 0.75 AND ver.bm25_ref_avgdl * 1.3
       OR (SELECT c.reltuples FROM pg_class AS c
           WHERE c.oid = format('autoembed.%I', ver.embeddings_table)::regclass) > 1e5 THEN
        RETURN false;
    END IF;
    BEGIN
        PERFORM set_config('lock_timeout', '50ms', true);
        SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR UPDATE;
        PERFORM autoembed._rebuild_bm25(v, ver);
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;  -- busy: try again at the next compaction
    END;
    PERFORM set_config('lock_timeout', old_timeout, true);
    RETURN true;
END
$$;
DROP FUNCTION IF EXISTS autoembed._reimpact_if_drifted(autoembed.vectorizer, autoembed.vectorizer_version);

-- Recompute a vectorizer's BM25 impacts (of every version) for the average
-- chunk length now; searches are exact either way, fastest right after.
-- Rebuilds the index (autoembed.optimize_bm25).
CREATE OR REPLACE FUNCTION autoembed.refresh_bm25_impacts(name text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT autoembed.optimize_bm25(name)
$$;

-- Fold a vectorizer's statistics deltas into one row per term and merge its
-- fresh chunks into the index (workers call this after draining; it only
-- makes queries faster). Returns the statistics rows removed.
CREATE OR REPLACE FUNCTION autoembed.compact_stats(name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version;
    before bigint;
    after bigint;
    removed bigint := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('autoembed.compact_stats'), v.id) THEN
        RETURN 0;
    END IF;
    -- merges write impacts for the vectorizer's k1 and b: hold them still
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR SHARE;
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id ORDER BY x.ordinal LOOP
        EXECUTE format($q$
        WITH old AS (DELETE FROM autoembed.%1$I RETURNING *),
        folded AS (
            INSERT INTO autoembed.%1$I (model_version_id, term, docs, length)
            SELECT model_version_id, term, sum(docs), sum(length) FROM old
            GROUP BY model_version_id, term
            HAVING sum(docs) <> 0 OR sum(length) <> 0
            RETURNING 1)
        SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM folded)
        $q$, ver.stats_table) INTO before, after;
        removed := removed + before - after;
        IF NOT autoembed._rebuild_if_drifted(v, ver) THEN
            PERFORM autoembed._merge_bm25(v, ver, 1);
        END IF;
    END LOOP;
    RETURN removed;
END
$$;

-- Set k1 and b of a vectorizer (defaults 1.2 and 0.5, tuned on SciFact's train
-- split; Anserini uses 0.9 and 0.4, Lucene 1.2 and 0.75). Takes effect at once;
-- rebuilds the index (autoembed.optimize_bm25).
CREATE OR REPLACE FUNCTION autoembed.set_bm25(name text, k1 float8, b float8)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._check_bm25(k1, b);
    UPDATE autoembed.vectorizer AS x SET bm25_k1 = k1, bm25_b = b WHERE x.id = v.id
    RETURNING * INTO v;
    PERFORM autoembed._rebuild_bm25(v, ver)
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
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

-- SQL text of the CTEs every BM25 query of version ver starts with, for query
-- text $1 and model version $2: q (the query's lexemes and their counts), coll
-- (N and avgdl) and weights (each lexeme's qtf * idf, for lexemes in the
-- collection), from the version's term statistics function.
CREATE OR REPLACE FUNCTION autoembed._bm25_weights(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        q AS (
            SELECT l.lexeme AS term, cardinality(l.positions)::float8 AS qtf
            FROM unnest(to_tsvector(%1$L::regconfig, $1)) AS l
        ), stats AS MATERIALIZED (
            SELECT * FROM autoembed.%2$I($2, ARRAY(SELECT q.term FROM q))
        ), coll AS (
            SELECT s.docs AS n, s.length / nullif(s.docs, 0) AS avgdl FROM stats AS s WHERE s.term = ''
        ), weights AS (
            SELECT q.term, q.qtf * ln(1 + (coll.n - d.df + 0.5) / (d.df + 0.5)) AS w, d.df
            FROM q CROSS JOIN coll
            JOIN (SELECT s.term, s.docs AS df FROM stats AS s WHERE s.term <> '') AS d ON d.term = q.term
            WHERE d.df > 0
        )$q$, v.ts_config, autoembed._term_stats_function(ver))
$$;

-- The highest BM25 score any chunk could reach for query: the sum of its
-- lexemes' weights (each term's saturation tf / (tf + ...) stays below 1).
-- hybrid_search divides by it to put BM25 scores on a 0..1 scale.
CREATE OR REPLACE FUNCTION autoembed.bm25_max_score(name text, query text, version text DEFAULT NULL)
RETURNS double precision
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
    result double precision;
BEGIN
    PERFORM autoembed._check_search_privilege(v, ver, 'bm25');
    IF query IS NULL OR ver.model_version_id IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('WITH %s SELECT sum(w) FROM weights', autoembed._bm25_weights(v, ver))
        INTO result USING query, ver.model_version_id;
    RETURN result;
END
$$;

-- SQL text: the exact BM25 scores of the chunks whose ids the relation
-- `cands` (chunk_id) holds, from their lexemes (the forward index), as
-- (chunk_id, score): summed in term order with one expression, so a score is
-- bit-equal to a naive scan's. Parameters $3 k1, $4 b; CTEs weights, coll.
CREATE OR REPLACE FUNCTION autoembed._bm25_exact(ver autoembed.vectorizer_version, cands text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT c.chunk_id,
               sum(w.w / (1 + $3 * ((1 - $4) / l.tf + $4 * (e.doc_len::float8 / l.tf) / coll.avgdl))
                   ORDER BY w.term) AS score
        FROM (SELECT DISTINCT x.chunk_id FROM (%2$s) AS x) AS c
        JOIN autoembed.%1$I AS e ON e.chunk_id = c.chunk_id
        CROSS JOIN LATERAL (SELECT u.lexeme, cardinality(u.positions) AS tf FROM unnest(e.lexemes) AS u) AS l
        JOIN weights AS w ON w.term = l.lexeme
        CROSS JOIN coll
        GROUP BY c.chunk_id
        $q$, ver.embeddings_table, cands)
$$;

-- SQL text: the K best of scored chunks `exact` (chunk_id, score), and any
-- tied with the K-th (the caller breaks ties by key), as a JSON array of
-- [chunk_id, score]. $6 is K.
CREATE OR REPLACE FUNCTION autoembed._bm25_best()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT $q$
        SELECT coalesce(jsonb_agg(jsonb_build_array(e.chunk_id, e.score)), '[]')
        FROM exact AS e
        WHERE e.score >= coalesce(
            (SELECT x.score FROM exact AS x ORDER BY x.score DESC OFFSET $6 - 1 LIMIT 1), 0)
    $q$
$$;

-- SQL text: the tsquery matching any of the query's lexemes (CTE weights),
-- each quoted as a literal lexeme (never parsed or stemmed again).
CREATE OR REPLACE FUNCTION autoembed._bm25_any_term()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT $q$(SELECT string_agg('''' || replace(replace(w.term, '\', '\\'), '''', '\''') || '''', ' | ')::tsquery
               FROM weights AS w)$q$
$$;

-- SQL text: the exact top K chunks for a query, by MaxScore over the posting
-- blocks (064_bm25_index.sql), for a role that sees the whole source.
-- Parameters: $1 query, $2 model version, $3 k1, $4 b, $5 M (best blocks
-- read per term for the estimate), $6 K, $7 the average length the impacts
-- assume, $8 B (postings of the rarest terms read whole for the estimate),
-- $9 alpha, $10 how many times K chunks the estimate scores exactly.
--
--   u(t)   = w(t) * (t's highest impact) * max(1, avgdl / assumed avgdl):
--            no merged chunk gets more than u(t) from term t (impacts were
--            computed with the assumed average length; the scale covers its
--            change);
--   theta  = the K-th best exact score among the most promising chunks seen
--            in the whole posting lists of the rarest terms (up to B
--            postings), the M best blocks of every term and the fresh chunks:
--            a lower bound of the true K-th best score;
--   minor terms: the longest run of lowest u whose sum stays below
--            alpha * theta; a chunk holding no other term cannot reach theta.
-- So of the merged chunks only those holding a major term (the rarer terms:
-- short posting lists) whose major part's bound plus the minor bounds
-- reaches theta (survivors) can be in the top K; they and every fresh chunk
-- holding a query term are scored exactly from their lexemes. Deleted
-- chunks' postings are skipped there (no lexemes to score).
CREATE OR REPLACE FUNCTION autoembed._bm25_top(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        WITH %1$s,
        bounds AS (
            SELECT w.term, w.w, w.df,
                   w.w * greatest(1, coll.avgdl / $7) * (1 + 1e-6) * coalesce((
                       SELECT p.max_impact FROM autoembed.%2$I AS p
                       WHERE p.model_version_id = $2 AND p.term = w.term
                       ORDER BY p.max_impact DESC LIMIT 1), 0) AS u   -- float4 impacts: allow for rounding
            FROM weights AS w CROSS JOIN coll
        ), rare AS (
            SELECT b.term FROM (
                SELECT b.term, sum(b.df) OVER (ORDER BY b.df, b.term ROWS UNBOUNDED PRECEDING) AS run,
                       row_number() OVER (ORDER BY b.df, b.term) AS i
                FROM bounds AS b) AS b
            WHERE b.run <= $8 OR b.i = 1
        ), fresh AS MATERIALIZED (
            -- chunks not merged yet that hold a query term
            SELECT f.chunk_id
            FROM autoembed.%2$I AS p CROSS JOIN LATERAL unnest(p.chunk_ids) AS f(chunk_id)
            JOIN autoembed.%3$I AS e ON e.chunk_id = f.chunk_id
            WHERE p.model_version_id = $2 AND p.term = '' AND e.lexemes @@ %4$s
        ), seen AS (
            SELECT u.chunk_id, sum(w.w * u.impact) AS promise
            FROM weights AS w
            CROSS JOIN LATERAL (
                SELECT p.chunk_ids, p.impacts FROM autoembed.%2$I AS p
                WHERE p.model_version_id = $2 AND p.term = w.term
                ORDER BY p.max_impact DESC
                LIMIT CASE WHEN w.term IN (SELECT term FROM rare) THEN NULL ELSE $5 END) AS b
            CROSS JOIN LATERAL unnest(b.chunk_ids, b.impacts) AS u(chunk_id, impact)
            GROUP BY u.chunk_id
            ORDER BY promise DESC, u.chunk_id
            LIMIT $10 * $6
        ), sample_exact AS MATERIALIZED (%5$s
        ), theta AS (
            -- exact up to float rounding, which the margin covers
            SELECT coalesce((SELECT x.score FROM sample_exact AS x ORDER BY x.score DESC OFFSET $6 - 1 LIMIT 1), 0)
                   * (1 - 1e-9) AS theta
        ), split AS (
            SELECT b.term, b.u,
                   sum(b.u) OVER (ORDER BY b.u, b.term ROWS UNBOUNDED PRECEDING) < $9 * theta.theta AS minor
            FROM bounds AS b CROSS JOIN theta
        ), survivors AS (
            SELECT u.chunk_id
            FROM split AS s JOIN weights AS w ON w.term = s.term
            JOIN autoembed.%2$I AS p ON p.model_version_id = $2 AND p.term = s.term
            CROSS JOIN LATERAL unnest(p.chunk_ids, p.impacts) AS u(chunk_id, impact)
            WHERE NOT s.minor
            GROUP BY u.chunk_id
            HAVING sum(w.w * u.impact) * (SELECT greatest(1, c.avgdl / $7) * (1 + 1e-6) FROM coll AS c)
                   + (SELECT coalesce(sum(s.u), 0) FROM split AS s WHERE s.minor)
                   >= (SELECT theta FROM theta)
        ), exact AS (%6$s
        )
        %7$s
        $q$,
        autoembed._bm25_weights(v, ver), ver.postings_table, ver.embeddings_table, autoembed._bm25_any_term(),
        autoembed._bm25_exact(ver, 'SELECT chunk_id FROM seen UNION ALL SELECT chunk_id FROM fresh'),
        autoembed._bm25_exact(ver, 'SELECT chunk_id FROM survivors UNION ALL SELECT chunk_id FROM fresh'),
        autoembed._bm25_best())
$$;

-- SQL text: the same exact top K by scanning every chunk the caller may see
-- that holds a query term (same parameters; most unused): for a role that
-- may not read the posting blocks, which list the chunks of every row.
CREATE OR REPLACE FUNCTION autoembed._bm25_scan(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        WITH %1$s,
        matching AS MATERIALIZED (
            SELECT e.chunk_id FROM autoembed.%2$I AS e WHERE e.lexemes @@ %3$s
        ), exact AS (%4$s
        )
        %5$s
        $q$,
        autoembed._bm25_weights(v, ver), ver.embeddings_table, autoembed._bm25_any_term(),
        autoembed._bm25_exact(ver, 'SELECT chunk_id FROM matching'), autoembed._bm25_best())
$$;

-- The k source rows whose best chunk scores highest for query under BM25.
-- Exact: equal, score for score, to summing over every posting of the query's
-- lexemes; fast: it reads each term's best postings first and widens only
-- until no unread chunk could still enter the top.
DROP FUNCTION IF EXISTS autoembed.bm25_search(text, text, int, jsonb, boolean, text);
CREATE OR REPLACE FUNCTION autoembed.bm25_search(
    name text, query text, k int DEFAULT 10, filter jsonb DEFAULT NULL, chunks boolean DEFAULT false,
    version text DEFAULT NULL, predicate text DEFAULT NULL, skip int DEFAULT 0,
    min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
-- The top-k query's estimated cost is far above its real one (milliseconds),
-- above jit_above_cost: where the server has JIT (Debian's PostgreSQL 15,
-- most managed services) compiling it took ~2 s a call.
SET jit = off
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
    top_sql text;
    want int;            -- chunks to rank exactly
    top jsonb;
    results jsonb;
    candidates bigint;
    found_rows bigint;
    weakest double precision;
    rows_wanted int := k + skip;   -- the first skip are passed over
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks, skip);
    PERFORM autoembed._check_search_privilege(v, ver, 'bm25');
    PERFORM autoembed._check_predicate(v, predicate);
    IF query IS NULL THEN
        RAISE EXCEPTION 'autoembed: query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF k = 0 OR ver.model_version_id IS NULL THEN
        RETURN;
    END IF;
    -- the posting blocks list chunks of every row: only a role that sees
    -- the whole source table reads them (080_grants.sql)
    top_sql := CASE WHEN autoembed._sees_whole_source(v.source) THEN autoembed._bm25_top(v, ver)
                    ELSE autoembed._bm25_scan(v, ver) END;
    -- rows: a few chunks more than k, as a row's second chunk takes no place
    want := CASE WHEN chunks THEN rows_wanted ELSE rows_wanted + 4 END;
    LOOP
        EXECUTE top_sql INTO top
            -- M 1 block, B 4000, alpha 0.6, 4K sampled: measured on 100k chunks
            -- (benchmarks/latency.py)
            USING query, ver.model_version_id, v.bm25_k1, v.bm25_b, 1, want, ver.bm25_ref_avgdl,
                  4000, 0.6, 4;
        -- their rows, best chunk per row, those the caller may see (the
        -- chunk ids typed first: a join on an expression of the jsonb could
        -- not probe the chunk_id index of a table under row-level security)
        EXECUTE autoembed._rank_hits(v, format($q$
                WITH t AS MATERIALIZED (
                    SELECT (h ->> 0)::bigint AS chunk_id, (h ->> 1)::float8 AS score
                    FROM jsonb_array_elements($1) AS h)
                SELECT %1$s, e.chunk_no, e.chunk, t.score
                FROM t JOIN autoembed.%2$I AS e ON e.chunk_id = t.chunk_id
                WHERE %3$s
                $q$, autoembed._pk_fragment(v, 'e.%1$I'), ver.embeddings_table,
                autoembed._visible(v, 'e', 2, predicate)),
            chunks, 3, 4)
            INTO results, candidates, found_rows, weakest
            USING top, filter, rows_wanted, min_score;
        -- enough rows, or every matching chunk is in hand, or the next are
        -- below min_score (top holds the best chunks of all, visible or not)
        EXIT WHEN found_rows >= rows_wanted OR jsonb_array_length(top) < want
               OR (SELECT min((h ->> 1)::float8) FROM jsonb_array_elements(top) AS h) < min_score;
        want := want * 2;
    END LOOP;
    RETURN QUERY SELECT * FROM autoembed._unpack_hits(results) AS h WHERE h.rank > skip;
END
$$;
