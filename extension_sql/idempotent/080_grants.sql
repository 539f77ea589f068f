-- Privileges on autoembed's own objects.
--
-- The catalog is readable by everyone, like pg_catalog: search functions run
-- as the caller and must look up a vectorizer by name. What a caller may
-- read of the data is decided by the source table's privileges and row-level
-- security (search joins back to it) and by grants on each vectorizer's
-- embeddings table, which PUBLIC does not get.
GRANT USAGE ON SCHEMA autoembed TO PUBLIC;
GRANT SELECT ON autoembed.model, autoembed.model_version, autoembed.vectorizer TO PUBLIC;
