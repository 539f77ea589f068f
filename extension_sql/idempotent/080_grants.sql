-- Privileges on autoembed's own objects.
--
-- The catalog is readable by everyone, like pg_catalog: search functions run
-- as the caller and must look up a vectorizer by name. What a caller may
-- read of the data is decided by the source table's privileges and row-level
-- security (search joins back to it) and by grants on each vectorizer's
-- embeddings table, which PUBLIC does not get.
GRANT USAGE ON SCHEMA autoembed TO PUBLIC;
GRANT SELECT ON autoembed.model, autoembed.model_version, autoembed.vectorizer TO PUBLIC;

-- Let a role search a vectorizer: SELECT on its embeddings and on the BM25
-- postings and statistics derived from them. What the role then sees is still
-- limited by its own privileges and row-level security on the source table
-- (searches join back to it). BM25 statistics (N, df, avgdl) are computed
-- over all rows, like a search engine's index statistics.
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
    EXECUTE format('GRANT SELECT ON autoembed.%I, autoembed.%I, autoembed.%I TO %s',
        v.embeddings_table, v.postings_table, v.stats_table, role);
END
$$;

CREATE OR REPLACE FUNCTION autoembed.revoke_search(name text, role regrole)
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
    EXECUTE format('REVOKE SELECT ON autoembed.%I, autoembed.%I, autoembed.%I FROM %s',
        v.embeddings_table, v.postings_table, v.stats_table, role);
END
$$;
