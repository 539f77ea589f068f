-- Hybrid search: BM25 and semantic candidates, fused per source row (or per
-- chunk with chunks => true). Both branches get the same filter and the
-- same snapshot (all three functions are STABLE).
--
--   fusion => 'rrf'     reciprocal rank fusion: sum of weight / (rrf_k + rank)
--   fusion => 'convex'  weighted sum of normalized scores; normalization:
--       'minmax'        per branch, over its candidates, to 0..1
--       'theoretical'   against what the query could score at best: BM25
--                       divided by autoembed.bm25_max_score(), cosine
--                       similarity as is (l2 and inner_product: minmax). A
--                       branch that matches the query weakly then weighs
--                       little, instead of being stretched to 0..1.
--
-- semantic_weight is the semantic branch's weight; BM25's is 1 - it.
-- candidates: how many rows each branch contributes (at least k).

CREATE OR REPLACE FUNCTION autoembed.hybrid_search(
    name text, query text, query_embedding @extschema:vector@.vector, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, fusion text DEFAULT 'rrf', rrf_k int DEFAULT 60,
    semantic_weight double precision DEFAULT 0.5, candidates int DEFAULT 100,
    chunks boolean DEFAULT false, normalization text DEFAULT 'minmax')
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
    theoretical boolean;
    bm25_max double precision;
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
    IF normalization IS NULL OR normalization NOT IN ('minmax', 'theoretical') THEN
        RAISE EXCEPTION 'autoembed: normalization must be minmax or theoretical, got %',
            coalesce(normalization, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k = 0 THEN
        RETURN;
    END IF;
    n := greatest(candidates, k);
    theoretical := fusion = 'convex' AND normalization = 'theoretical';
    IF theoretical THEN
        bm25_max := autoembed.bm25_max_score(name, query);
        theoretical := (autoembed._vectorizer(name)).distance = 'cosine';
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
        SELECT CASE WHEN theoretical THEN 0 ELSE min(s_score) END AS s_min,
               CASE WHEN theoretical THEN 1 ELSE max(s_score) END AS s_max,
               CASE WHEN bm25_max > 0 THEN 0 ELSE min(l_score) END AS l_min,
               CASE WHEN bm25_max > 0 THEN bm25_max ELSE max(l_score) END AS l_max
        FROM joined
    ), fused AS (
        SELECT j.pk, j.chunk_no, j.chunk,
               CASE fusion
                   WHEN 'rrf' THEN
                       semantic_weight * coalesce(1.0 / (rrf_k + j.s_rank), 0)
                       + (1 - semantic_weight) * coalesce(1.0 / (rrf_k + j.l_rank), 0)
                   ELSE
                       semantic_weight * CASE WHEN j.s_score IS NULL THEN 0
                           WHEN b.s_max > b.s_min THEN (j.s_score - b.s_min) / (b.s_max - b.s_min)
                           ELSE 1 END
                       + (1 - semantic_weight) * CASE WHEN j.l_score IS NULL THEN 0
                           WHEN b.l_max > b.l_min THEN (j.l_score - b.l_min) / (b.l_max - b.l_min)
                           ELSE 1 END
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
