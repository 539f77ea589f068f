-- autoembed 0.3.0: BM25's index as posting blocks in segments. Run once, by
-- migration 0005.
--
-- Every version's postings table (one row per chunk and lexeme, three
-- B-tree indexes) is replaced by one of posting blocks
-- (extension_sql/idempotent/064_bm25_index.sql); all of its chunks start on
-- the fresh list (searchable at once, exactly, from their lexemes) and the
-- install merges them into the index (090_upgrade.sql). Row-level security,
-- grants and policies are made anew by the install (_secure_version).
DO $migrate$
DECLARE
    v record;
    ver record;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer ORDER BY id LOOP
        FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id ORDER BY x.ordinal LOOP
            EXECUTE pg_catalog.format('DROP TABLE autoembed.%I', ver.postings_table);
            EXECUTE pg_catalog.format(
                'CREATE TABLE autoembed.%I (model_version_id int NOT NULL, term text NOT NULL, '
                'segment int NOT NULL, max_impact float4 NOT NULL, '
                'chunk_ids bigint[] NOT NULL, impacts float4[] NOT NULL)',
                ver.postings_table);
            EXECUTE pg_catalog.format(
                'CREATE INDEX %I ON autoembed.%I (model_version_id, term, max_impact DESC)',
                autoembed._derived_name(v.name, pg_catalog.format('_postings_impact_v%s', ver.ordinal)), ver.postings_table);
            EXECUTE pg_catalog.format('CREATE INDEX %I ON autoembed.%I (segment)',
                autoembed._derived_name(v.name, pg_catalog.format('_postings_segment_v%s', ver.ordinal)), ver.postings_table);
            EXECUTE pg_catalog.format('REVOKE ALL ON autoembed.%I FROM PUBLIC', ver.postings_table);
            EXECUTE pg_catalog.format(
                'INSERT INTO autoembed.%I (model_version_id, term, segment, max_impact, chunk_ids, impacts) '
                'SELECT e.model_version_id, '''', 0, 0, pg_catalog.array_agg(e.chunk_id), ''{}'' '
                'FROM autoembed.%I AS e GROUP BY e.model_version_id',
                ver.postings_table, ver.embeddings_table);
        END LOOP;
    END LOOP;
END
$migrate$;
