-- autoembed 0.3.0: how a version stores its vectors. Run once, by migration 0004.
--
--   vector   vector(dimensions), float4 (as before), HNSW on the vectors;
--   halfvec  halfvec(dimensions), float2: half the bytes, HNSW on them;
--   binary   vector(dimensions) kept for exact re-ranking, HNSW on their
--            binary quantization (one bit per dimension, Hamming distance).
-- A version's storage is fixed; changing it is a new version (set_model),
-- so one model may have a version per storage. Versions made before: vector.
-- See extension_sql/idempotent/035_version_tables.sql.

ALTER TABLE autoembed.vectorizer_version
    ADD COLUMN storage text NOT NULL DEFAULT 'vector' CHECK (storage IN ('vector', 'halfvec', 'binary')),
    DROP CONSTRAINT vectorizer_version_vectorizer_id_model_dimensions_key,
    ADD CONSTRAINT vectorizer_version_vectorizer_id_model_dimensions_storage_key
        UNIQUE (vectorizer_id, model, dimensions, storage);

-- Signatures that gained storage (the idempotent files make them anew).
DROP VIEW IF EXISTS autoembed.vectorizer_versions;
DROP FUNCTION IF EXISTS
    autoembed._version_stats(autoembed.vectorizer, autoembed.vectorizer_version),
    autoembed._add_version(autoembed.vectorizer, text, int, text, text),
    autoembed.set_model(text, text, int, text),
    autoembed.create_vectorizer(regclass, text[], text, text, int, int, int, regconfig, float8, float8,
                                text, text, boolean, int, interval);
