-- autoembed 0.2.0: versions side by side. Run once, by migration 0002.
--
-- A vectorizer's embeddings now live in versions: each version has its
-- model, its own queue, embeddings (with their own vector(dimensions)
-- column and HNSW index), BM25 postings and statistics. One version is
-- active (searches use it); a building one is being embedded by a
-- re-embedding campaign; ready ones are complete and wait to be activated;
-- retired ones were active and are kept, current, for a rollback. The
-- view autoembed.<name>_embeddings always shows the active version's chunks.
-- See extension_sql/idempotent/047_lifecycle.sql.

CREATE TABLE autoembed.vectorizer_version (
    id                int      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vectorizer_id     int      NOT NULL REFERENCES autoembed.vectorizer (id) ON DELETE CASCADE,
    ordinal           int      NOT NULL CHECK (ordinal > 0),   -- "version 2" of this vectorizer
    model             text     NOT NULL,
    dimensions        int      NOT NULL CHECK (dimensions > 0),
    -- the exact model version (weights digest, pooling, ...) its vectors were
    -- made with: set by the first worker that writes, then enforced
    model_version_id  int      REFERENCES autoembed.model_version (id),
    state             text     NOT NULL CHECK (state IN ('building', 'ready', 'active', 'retired')),
    activate          text     NOT NULL DEFAULT 'auto' CHECK (activate IN ('auto', 'manual')),
    queue_table       name     NOT NULL,
    embeddings_table  name     NOT NULL,
    postings_table    name     NOT NULL,
    stats_table       name     NOT NULL,
    bm25_ref_avgdl    float8   NOT NULL DEFAULT 100 CHECK (bm25_ref_avgdl > 0),  -- avgdl the impacts assume
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    activated_at      timestamptz,
    retired_at        timestamptz,
    last_claim_at     timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    UNIQUE (vectorizer_id, ordinal),
    UNIQUE (vectorizer_id, model, dimensions)
);
-- One active version per vectorizer, at most one campaign at a time.
CREATE UNIQUE INDEX vectorizer_version_one_active
    ON autoembed.vectorizer_version (vectorizer_id) WHERE state = 'active';
CREATE UNIQUE INDEX vectorizer_version_one_building
    ON autoembed.vectorizer_version (vectorizer_id) WHERE state = 'building';

-- Who may search each 0.1.0 vectorizer: the grantees of SELECT (without
-- INSERT, which workers have) on its embeddings table. The next install
-- (090_upgrade.sql) grants them the view that takes that table's name, which
-- makes them its searchers, and drops this table.
CREATE TABLE autoembed._searchers_0_1_0 AS
SELECT v.id AS vectorizer_id, a.grantee
FROM autoembed.vectorizer AS v
JOIN pg_catalog.pg_class AS c
  ON c.oid = pg_catalog.to_regclass(pg_catalog.format('autoembed.%I', v.embeddings_table))
CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
WHERE a.grantee <> c.relowner
GROUP BY v.id, a.grantee
HAVING pg_catalog.bool_or(a.privilege_type = 'SELECT')
   AND NOT pg_catalog.bool_or(a.privilege_type = 'INSERT');

-- Vectorizers made by 0.1.0: their tables become version 1, renamed as
-- every version's are (<name>_queue_v1, ...); the name <name>_embeddings
-- passes to the view of the active version (made by every install).
DO $migrate$
DECLARE
    v record;
    kind text;
    old_table text;
    new_table text;
    con name;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer ORDER BY id LOOP
        FOREACH kind IN ARRAY ARRAY['queue', 'embeddings', 'postings', 'stats'] LOOP
            old_table := autoembed._derived_name(v.name, '_' || kind);
            new_table := autoembed._derived_name(v.name, '_' || kind || '_v1');
            EXECUTE pg_catalog.format('ALTER TABLE autoembed.%I RENAME TO %I', old_table, new_table);
            -- constraints named after the table (not null, check, foreign
            -- key), as PostgreSQL names them for a table made with the new
            -- name (the primary and unique keys follow their indexes below)
            FOR con IN
                SELECT c.conname FROM pg_catalog.pg_constraint AS c
                WHERE c.conrelid = pg_catalog.format('autoembed.%I', new_table)::regclass
                  AND c.contype NOT IN ('p', 'u')
                  AND pg_catalog.left(c.conname, pg_catalog.length(old_table) + 1) = old_table || '_'
                  AND pg_catalog.octet_length(new_table || pg_catalog.substr(c.conname, pg_catalog.length(old_table) + 1)) <= 63
            LOOP
                EXECUTE pg_catalog.format('ALTER TABLE autoembed.%I RENAME CONSTRAINT %I TO %I', new_table, con,
                    new_table || pg_catalog.substr(con, pg_catalog.length(old_table) + 1));
            END LOOP;
        END LOOP;
        FOREACH kind IN ARRAY ARRAY['queue_pkey', 'embeddings_pkey', 'chunk_id', 'hnsw', 'postings_impact',
                                    'postings_term', 'postings_chunk', 'stats_term'] LOOP
            IF pg_catalog.to_regclass(pg_catalog.format('autoembed.%I',
                    autoembed._derived_name(v.name, '_' || kind))) IS NOT NULL THEN
                EXECUTE pg_catalog.format('ALTER INDEX autoembed.%I RENAME TO %I',
                    autoembed._derived_name(v.name, '_' || kind),
                    autoembed._derived_name(v.name, '_' || kind || '_v1'));
            END IF;
        END LOOP;
        -- the chunk_id identity's sequence, named as for a new table
        IF octet_length(autoembed._derived_name(v.name, '_embeddings_v1') || '_chunk_id_seq') <= 63 THEN
            EXECUTE pg_catalog.format('ALTER SEQUENCE %s RENAME TO %I',
                pg_catalog.pg_get_serial_sequence(
                    pg_catalog.format('autoembed.%I', autoembed._derived_name(v.name, '_embeddings_v1')), 'chunk_id'),
                autoembed._derived_name(v.name, '_embeddings_v1') || '_chunk_id_seq');
        END IF;
        INSERT INTO autoembed.vectorizer_version (
            vectorizer_id, ordinal, model, dimensions, model_version_id, state,
            queue_table, embeddings_table, postings_table, stats_table, bm25_ref_avgdl,
            created_at, completed_at, activated_at, last_claim_at, last_error, last_error_at)
        VALUES (
            v.id, 1, v.model, v.dimensions, v.active_version_id, 'active',
            autoembed._derived_name(v.name, '_queue_v1'), autoembed._derived_name(v.name, '_embeddings_v1'),
            autoembed._derived_name(v.name, '_postings_v1'), autoembed._derived_name(v.name, '_stats_v1'),
            v.bm25_ref_avgdl, v.created_at, v.created_at, v.created_at, v.last_claim_at,
            v.last_error, v.last_error_at);
    END LOOP;
END
$migrate$;

-- What moved to the versions. embeddings_table stays: the view's name.
ALTER TABLE autoembed.vectorizer
    DROP COLUMN model,
    DROP COLUMN dimensions,
    DROP COLUMN active_version_id,
    DROP COLUMN queue_table,
    DROP COLUMN postings_table,
    DROP COLUMN stats_table,
    DROP COLUMN bm25_ref_avgdl,
    DROP COLUMN last_error,
    DROP COLUMN last_error_at,
    DROP COLUMN last_claim_at;

-- Functions whose arguments or results changed (the idempotent files make
-- them anew; these signatures would otherwise linger as overloads).
DROP VIEW IF EXISTS autoembed.vectorizer_status;
DROP FUNCTION IF EXISTS
    autoembed.vectorizer_stats(),
    autoembed.work_summary(int[]),
    autoembed._queue_counts(autoembed.vectorizer),
    autoembed._create_tables(autoembed.vectorizer, name),
    autoembed._create_bm25_tables(autoembed.vectorizer),
    autoembed._check_version(autoembed.vectorizer, int),
    autoembed.claim_batch(int, int, interval, uuid),
    autoembed.complete_batch(int, uuid, int, jsonb, int[], int[], text[], @extschema:vector@.vector[]),
    autoembed._insert_chunks(autoembed.vectorizer, int, jsonb, jsonb, int[], int[], text[],
                             @extschema:vector@.vector[]),
    autoembed.fail_items(int, uuid, jsonb, text[]),
    autoembed.extend_lease(int, uuid, interval),
    autoembed.release_claim(int, uuid),
    autoembed.report_vectorizer_error(int, text),
    autoembed._avgdl(autoembed.vectorizer),
    autoembed._reimpact(autoembed.vectorizer),
    autoembed._reimpact_if_drifted(autoembed.vectorizer),
    autoembed._bm25_weights(autoembed.vectorizer),
    autoembed._bm25_top(autoembed.vectorizer),
    autoembed.bm25_max_score(text, text),
    autoembed.bm25_search(text, text, int, jsonb, boolean),
    autoembed.search(text, @extschema:vector@.vector, int, jsonb, boolean),
    autoembed.search(text, text, int, jsonb, boolean),
    autoembed.hybrid_search(text, text, @extschema:vector@.vector, int, jsonb, text, int,
                            double precision, int, boolean, text),
    autoembed.hybrid_search(text, text, int, jsonb, text, int, double precision, int, boolean, text),
    autoembed.embed_query(text, text),
    autoembed._embed_query_by_worker(autoembed.vectorizer, text),
    autoembed.set_model(text, text, int),
    autoembed.failed_rows(text);
