-- Semantic search. Runs as the caller (SECURITY INVOKER) and keeps only rows
-- the caller can still see in the source table, so its privileges and
-- row-level security decide what comes back.

CREATE OR REPLACE FUNCTION autoembed._check_k(k int)
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
    IF k > 10000 THEN
        RAISE EXCEPTION 'autoembed: k must be at most 10000, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The k source rows nearest to query_embedding, each with its best chunk.
-- score: cosine similarity (cosine), inner product (inner_product) or the
-- negated distance (l2); higher is better. rank: 1 = best.
CREATE OR REPLACE FUNCTION autoembed.search(
    name text, query_embedding @extschema:vector@.vector, k int DEFAULT 10)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET hnsw.iterative_scan = 'relaxed_order'
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    op text;
    score_expr text;
    fetch_n int;
    hits jsonb;
    candidates int;
    old_ef text := current_setting('hnsw.ef_search', true);
BEGIN
    PERFORM autoembed._check_k(k);
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION 'autoembed: query_embedding must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF @extschema:vector@.vector_dims(query_embedding) <> v.dimensions THEN
        RAISE EXCEPTION 'autoembed: the query embedding has % dimensions but vectorizer "%" stores %',
            @extschema:vector@.vector_dims(query_embedding), v.name, v.dimensions
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF k = 0 OR v.active_version_id IS NULL THEN
        RETURN;
    END IF;
    op := CASE v.distance WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->' ELSE '<#>' END;
    score_expr := CASE v.distance WHEN 'cosine' THEN '1 - c.distance' ELSE '- c.distance' END;

    -- Fetch the nearest chunks, widening until k distinct visible rows are
    -- found or the candidates run out.
    fetch_n := k * 4 + 16;
    LOOP
        PERFORM set_config('hnsw.ef_search', least(greatest(fetch_n, 40), 1000)::text, true);
        EXECUTE format($q$
            WITH c AS MATERIALIZED (
                SELECT %1$s, e.chunk_no, e.chunk,
                       e.embedding OPERATOR(@extschema:vector@.%3$s) $1 AS distance
                FROM autoembed.%2$I AS e
                WHERE e.model_version_id = $2
                ORDER BY e.embedding OPERATOR(@extschema:vector@.%3$s) $1
                LIMIT $3
            ), best AS (
                SELECT DISTINCT ON (%4$s) c.* FROM c ORDER BY %4$s, c.distance, c.chunk_no
            ), visible AS (
                SELECT c.* FROM best AS c
                WHERE EXISTS (SELECT 1 FROM %5$s AS s WHERE %6$s)
                ORDER BY c.distance, c.chunk_no
                LIMIT $4
            )
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'pk', %7$s, 'chunk_no', c.chunk_no, 'chunk', c.chunk, 'score', %8$s)
                       ORDER BY c.distance, c.chunk_no), '[]'),
                   (SELECT count(*) FROM c)
            FROM visible AS c
            $q$,
            autoembed._pk_fragment(v, 'e.%1$I'), v.embeddings_table, op,
            autoembed._pk_fragment(v, 'c.%1$I'), v.source, autoembed._pk_join(v, 's', 'c'),
            autoembed._pk_json(v, 'c'), score_expr)
            INTO hits, candidates
            USING query_embedding, v.active_version_id, fetch_n, k;
        EXIT WHEN jsonb_array_length(hits) >= k OR candidates < fetch_n OR fetch_n >= 1000000;
        fetch_n := fetch_n * 4;
    END LOOP;
    PERFORM set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
    RETURN QUERY
        SELECT h.hit -> 'pk', (h.hit ->> 'chunk_no')::int, h.hit ->> 'chunk',
               (h.hit ->> 'score')::double precision, h.ord
        FROM jsonb_array_elements(hits) WITH ORDINALITY AS h(hit, ord);
END
$$;
