-- Hybrid search: BM25 and semantic candidates, fused per source row (or per
-- chunk with chunks => true). Both branches get the same filter and the
-- same snapshot (all three functions are STABLE).
--
--   fusion => 'convex' (default): semantic_weight * semantic part
--                                 + (1 - semantic_weight) * BM25 part, where
--                                 a part is the branch's normalized score
--                                 (0 for a row the branch did not return):
--       normalization => 'spread' (default): the score's height above the
--           branch's weakest candidate, over the room up to the best score
--           the query could reach (cosine 1; BM25 bm25_max_score()). A branch
--           whose candidates all match alike (it cannot tell them apart)
--           adds little; one with a clear winner adds much.
--       normalization => 'minmax': min-max over the branch's candidates.
--   fusion => 'rrf'      reciprocal rank fusion: semantic_weight / (rrf_k +
--                        semantic rank) + (1 - semantic_weight) / (rrf_k + BM25 rank).
--
-- The defaults were chosen on SciFact's train split as the setting that
-- beats both single methods by the widest margin in the worst of four
-- conditions: as is, long noisy queries, a weakened BM25 branch and a
-- weakened semantic branch (benchmarks/tune_search.py). Equal-weight RRF
-- falls below the stronger branch when the other is weak.
-- candidates: how many rows each branch contributes (at least k). 20 by
-- default: on SciFact's train split the top 10 are as good from 20 as from
-- 100 (nDCG@10 0.733 and 0.730), and each branch is 2-4x faster at 100k
-- chunks (benchmarks/latency.py).

-- Pages (skip) are slices of one ranking as long as k + skip stays within
-- candidates: beyond, each branch contributes k + skip rows, which moves the
-- normalization bounds. To page through the top 100, pass candidates => 100.
DROP FUNCTION IF EXISTS autoembed.hybrid_search(
    text, text, @extschema:vector@.vector, int, jsonb, text, int, double precision, int, boolean, text, text);
CREATE OR REPLACE FUNCTION autoembed.hybrid_search(
    name text, query text, query_embedding @extschema:vector@.vector, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, fusion text DEFAULT 'convex', rrf_k int DEFAULT 60,
    semantic_weight double precision DEFAULT 0.5, candidates int DEFAULT 20,
    chunks boolean DEFAULT false, normalization text DEFAULT 'spread', version text DEFAULT NULL,
    predicate text DEFAULT NULL, skip int DEFAULT 0, min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    -- one version for both branches, named by number from here on
    ver text := (autoembed._version(v, version)).ordinal::text;
    n int;
    spread boolean := normalization = 'spread';
    semantic_top double precision;
    bm25_top double precision;
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks, skip);
    PERFORM autoembed._check_search_privilege(v, autoembed._version(v, ver), 'bm25');
    PERFORM autoembed._check_predicate(v, predicate);
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
    n := greatest(candidates, k + skip);
    IF fusion = 'convex' AND spread THEN
        semantic_top := CASE v.distance WHEN 'l2' THEN 0 ELSE 1 END;
        bm25_top := autoembed.bm25_max_score(name, query, ver);
    END IF;
    RETURN QUERY
    WITH sem AS (
        SELECT * FROM autoembed.search(name, query_embedding, n, filter, chunks, ver, predicate)
    ), lex AS (
        SELECT * FROM autoembed.bm25_search(name, query, n, filter, chunks, ver, predicate)
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
    SELECT f.pk, f.chunk_no, f.chunk, f.score::double precision, f.rank
    FROM (SELECT f.*, row_number() OVER (ORDER BY f.score DESC, f.pk, f.chunk_no) AS rank
          FROM fused AS f
          WHERE min_score IS NULL OR f.score >= min_score) AS f
    ORDER BY f.rank
    OFFSET skip LIMIT k;
END
$$;
