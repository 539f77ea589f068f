-- Looking at versions before switching: how differently two versions rank
-- the same queries (compare_versions), and the shape of a version's vectors
-- (version_health).

-- Per query, how the top k of two versions of a vectorizer agree, then a
-- summary row (query NULL) with the means:
--   overlap           shared rows / the longer list (1: the same rows);
--   rank_correlation  Kendall's tau of the shared rows' ranks in the two
--                     lists (1: same order, -1: reversed; NULL under 2 shared);
--   a_top, b_top      each version's ranked keys.
-- a: the active version by default; b: the newest other version. method:
-- semantic (default), hybrid or bm25. Text queries: a worker embeds each
-- query with each version's model (068_query_loopback.sql).
CREATE OR REPLACE FUNCTION autoembed.compare_versions(
    name text, queries text[], k int DEFAULT 10, a text DEFAULT NULL, b text DEFAULT NULL,
    method text DEFAULT 'semantic')
RETURNS TABLE (query text, overlap double precision, rank_correlation double precision,
               shared int, a_top jsonb, b_top jsonb)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    va autoembed.vectorizer_version := autoembed._version(v, a);
    vb autoembed.vectorizer_version;
    q text;
    overlap_list double precision[] := '{}';
    tau_list double precision[] := '{}';
BEGIN
    IF queries IS NULL OR cardinality(queries) = 0 THEN
        RAISE EXCEPTION 'autoembed: queries must hold at least one query' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'autoembed: k must be between 1 and 1000, got %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF method IS NULL OR method NOT IN ('semantic', 'hybrid', 'bm25') THEN
        RAISE EXCEPTION 'autoembed: method must be semantic, hybrid or bm25, got %', coalesce(method, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF b IS NULL THEN
        SELECT * INTO vb FROM autoembed.vectorizer_version AS x
        WHERE x.vectorizer_id = v.id AND x.id <> va.id ORDER BY x.ordinal DESC LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'autoembed: vectorizer "%" has one version only; nothing to compare', v.name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Start a campaign with another model: SELECT autoembed.set_model(name, model);';
        END IF;
    ELSE
        vb := autoembed._version(v, b);
    END IF;
    FOREACH q IN ARRAY queries LOOP
        query := q;
        a_top := autoembed._ranked_keys(v.name, q, k, va.ordinal::text, method);
        b_top := autoembed._ranked_keys(v.name, q, k, vb.ordinal::text, method);
        SELECT count(*)::int,
               count(*)::float8 / greatest(jsonb_array_length(a_top), jsonb_array_length(b_top), 1)
        INTO shared, overlap
        FROM jsonb_array_elements(a_top) AS x(key) WHERE b_top @> jsonb_build_array(x.key);
        -- Kendall's tau over the shared keys: concordant minus discordant pairs
        WITH ranks AS (
            SELECT x.ord AS ra, y.ord AS rb
            FROM jsonb_array_elements(a_top) WITH ORDINALITY AS x(key, ord)
            JOIN jsonb_array_elements(b_top) WITH ORDINALITY AS y(key, ord) ON x.key = y.key
        )
        SELECT CASE WHEN count(*) = 0 THEN NULL
                    ELSE sum(sign(p.ra - r.ra) * sign(p.rb - r.rb))::float8 / count(*) END
        INTO rank_correlation
        FROM ranks AS p JOIN ranks AS r ON p.ra < r.ra;
        overlap_list := overlap_list || overlap;
        tau_list := tau_list || rank_correlation;
        RETURN NEXT;
    END LOOP;
    query := NULL;
    shared := NULL;
    a_top := jsonb_build_object('version', va.ordinal, 'model', va.model);
    b_top := jsonb_build_object('version', vb.ordinal, 'model', vb.model);
    overlap := (SELECT avg(x) FROM unnest(overlap_list) AS x);
    rank_correlation := (SELECT avg(x) FROM unnest(tau_list) AS x);
    RETURN NEXT;
END
$$;

-- The keys of the top k rows of one version for a text query, best first.
CREATE OR REPLACE FUNCTION autoembed._ranked_keys(name text, query text, k int, version text, method text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys jsonb;
BEGIN
    IF method = 'bm25' THEN
        SELECT coalesce(jsonb_agg(s.pk ORDER BY s.rank), '[]') INTO keys
        FROM autoembed.bm25_search(name, query, k, version => version) AS s;
    ELSIF method = 'hybrid' THEN
        SELECT coalesce(jsonb_agg(s.pk ORDER BY s.rank), '[]') INTO keys
        FROM autoembed.hybrid_search(name, query, k, version => version) AS s;
    ELSE
        SELECT coalesce(jsonb_agg(s.pk ORDER BY s.rank), '[]') INTO keys
        FROM autoembed.search(name, query, k, version => version) AS s;
    END IF;
    RETURN keys;
END
$$;

-- The shape of a version's vectors, from a random sample of its chunks:
--   mean_pair_cosine  mean cosine similarity of random pairs of chunks
--                     (anisotropy: near 0, vectors spread in every
--                     direction; high, they crowd into a narrow cone and
--                     cosine scores lose their contrast);
--   mean_norm         mean vector length (1 for a normalizing model; a
--                     change means the model or its settings changed);
--   recent_chunks, drift   chunks embedded within `recent`, and the cosine
--                     distance between their centroid and the whole
--                     version's (0: new text looks like the old; growing:
--                     the incoming data moves away from what was embedded).
-- Reads the version's whole embeddings table once (the centroid).
CREATE OR REPLACE FUNCTION autoembed.version_health(
    name text, version text DEFAULT NULL, sample int DEFAULT 1000, recent interval DEFAULT '1 day')
RETURNS TABLE (version_no int, model text, chunks bigint, sampled int, mean_pair_cosine double precision,
               mean_norm double precision, recent_chunks bigint, drift double precision)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version_health.version);
BEGIN
    IF sample IS NULL OR sample < 2 OR sample > 1000000 THEN
        RAISE EXCEPTION 'autoembed: sample must be between 2 and 1000000, got %', coalesce(sample::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF recent IS NULL OR recent <= interval '0' THEN
        RAISE EXCEPTION 'autoembed: recent must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH s AS MATERIALIZED (
            SELECT e.embedding, row_number() OVER () AS i
            -- as vector: under storage halfvec, too (vector_norm)
            FROM (SELECT embedding::@extschema:vector@.vector AS embedding FROM autoembed.%1$I
                  ORDER BY pg_catalog.random() LIMIT 2 * $1) AS e
        ), half AS (SELECT (count(*) / 2)::int AS n FROM s),
        pairs AS (
            SELECT 1 - (x.embedding OPERATOR(@extschema:vector@.<=>) y.embedding) AS cosine
            FROM s AS x JOIN s AS y ON y.i = x.i + (SELECT n FROM half)
            WHERE x.i <= (SELECT n FROM half)
        ), whole AS (
            SELECT count(*) AS n, @extschema:vector@.avg(embedding::@extschema:vector@.vector) AS centroid,
                   count(*) FILTER (WHERE embedded_at > pg_catalog.now() - $2) AS recent_n,
                   @extschema:vector@.avg(embedding::@extschema:vector@.vector)
                       FILTER (WHERE embedded_at > pg_catalog.now() - $2) AS recent_centroid
            FROM autoembed.%1$I
        )
        SELECT $3::int, $4::text, w.n, (SELECT count(*)::int FROM s),
               (SELECT avg(p.cosine) FROM pairs AS p),
               (SELECT avg(@extschema:vector@.vector_norm(s.embedding)) FROM s),
               w.recent_n,
               w.recent_centroid OPERATOR(@extschema:vector@.<=>) w.centroid
        FROM whole AS w
        $q$, ver.embeddings_table)
        USING sample, recent, ver.ordinal, ver.model;
END
$$;
