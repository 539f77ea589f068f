-- Searches with a text query: the query is embedded by embed_query()
-- (068_query_loopback.sql), with exactly the model version of the vectors
-- searched.

-- Semantic search with a text query, embedded by embed_query().
-- search('articles', 'some text', 10) picks this variant (an untyped literal
-- prefers text); pass a vector (or cast: '[...]'::vector) for the other.
-- The version is resolved once: the query is embedded for it and searched in
-- it, even if another version becomes active meanwhile.
DROP FUNCTION IF EXISTS autoembed.search(text, text, int, jsonb, boolean, text);
CREATE OR REPLACE FUNCTION autoembed.search(
    name text, query text, k int DEFAULT 10, filter jsonb DEFAULT NULL, chunks boolean DEFAULT false,
    version text DEFAULT NULL, predicate text DEFAULT NULL, skip int DEFAULT 0,
    min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks, skip);
    PERFORM autoembed._check_search_privilege(v, ver, 'semantic');
    PERFORM autoembed._check_predicate(v, predicate);
    PERFORM autoembed._check_query_text(query);
    IF k = 0 OR ver.model_version_id IS NULL THEN
        RETURN;   -- nothing to search (as the vector variant), so nothing to embed
    END IF;
    RETURN QUERY
    SELECT * FROM autoembed.search(name, autoembed.embed_query(name, query, ver.ordinal::text), k, filter,
                                   chunks, ver.ordinal::text, predicate, skip, min_score);
END
$$;

-- Hybrid search with a text query: the text for BM25, its embedding
-- (embed_query()) for the semantic branch; options as the vector variant.
DROP FUNCTION IF EXISTS autoembed.hybrid_search(
    text, text, int, jsonb, text, int, double precision, int, boolean, text, text);
CREATE OR REPLACE FUNCTION autoembed.hybrid_search(
    name text, query text, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, fusion text DEFAULT 'convex', rrf_k int DEFAULT 60,
    semantic_weight double precision DEFAULT 0.5, candidates int DEFAULT 20,
    chunks boolean DEFAULT false, normalization text DEFAULT 'spread', version text DEFAULT NULL,
    predicate text DEFAULT NULL, skip int DEFAULT 0, min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks, skip);
    PERFORM autoembed._check_query_text(query);
    -- The vector variant checks every option before its first use of the
    -- vector; with k = 0 it stops right there. Bad options fail before a
    -- worker is asked for anything.
    PERFORM autoembed.hybrid_search(
        name, query, array_fill(0, ARRAY[ver.dimensions])::real[]::@extschema:vector@.vector, 0,
        filter, fusion, rrf_k, semantic_weight, candidates, chunks, normalization, ver.ordinal::text,
        predicate, skip, min_score);
    IF k = 0 OR ver.model_version_id IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT * FROM autoembed.hybrid_search(
        name, query, autoembed.embed_query(name, query, ver.ordinal::text), k,
        filter, fusion, rrf_k, semantic_weight, candidates, chunks, normalization, ver.ordinal::text,
        predicate, skip, min_score);
END
$$;
