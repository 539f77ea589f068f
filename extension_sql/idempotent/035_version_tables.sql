-- A version's own tables: everything that depends on the model.
--
--   queue       one row per key the version still has to embed, and its
--               claim state (050_queue.sql);
--   embeddings  the chunks, their embeddings and lexemes, keyed by
--               (key, model version, chunk), and by a chunk_id the BM25
--               postings use; its own HNSW index, as its storage says:
--                 vector   vector(dimensions) (float4), HNSW on them;
--                 halfvec  halfvec(dimensions) (float2): half the bytes,
--                          HNSW on them; scores within float2 precision;
--                 binary   vector(dimensions), and an HNSW index on their
--                          binary quantization (a bit per dimension,
--                          Hamming distance): searches take candidates
--                          from it and re-rank them by the full vectors
--                          (060_search.sql, _nearest_sql);
--   postings, stats   BM25 over the same chunks (065_bm25.sql).
-- Named <vectorizer>_<kind>_v<ordinal>. Dropping a version drops them.

-- Refuse an index method other than hnsw or none, a storage that is not one
-- of the three, or one whose index cannot hold the model's dimensions
-- (pgvector's HNSW: vector 2000, halfvec 4000, bit 64000).
CREATE OR REPLACE FUNCTION autoembed._check_storage(storage text, index_method text, model text, dimensions int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    most int := CASE storage WHEN 'vector' THEN 2000 WHEN 'halfvec' THEN 4000 ELSE 64000 END;
BEGIN
    IF index_method IS NULL OR index_method NOT IN ('hnsw', 'none') THEN
        RAISE EXCEPTION 'autoembed: index must be hnsw or none, got %', coalesce(index_method, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'none: no vector index (exact scans; for a large backfill, then set_index(name, ''hnsw'')).';
    END IF;
    IF storage IS NULL OR storage NOT IN ('vector', 'halfvec', 'binary') THEN
        RAISE EXCEPTION 'autoembed: unknown storage "%"', coalesce(storage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'storage is vector (float4), halfvec (float2, half the bytes) or binary '
                      || '(an index of one bit per dimension, re-ranked by the full vectors).';
    END IF;
    IF storage = 'binary' AND index_method <> 'hnsw' THEN
        RAISE EXCEPTION 'autoembed: storage binary needs index hnsw (its bits are only an index)'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Without an index, storage => ''vector'' searches exactly; or pass index => ''hnsw''.';
    END IF;
    IF index_method = 'hnsw' AND dimensions > most THEN
        RAISE EXCEPTION 'autoembed: an hnsw index on % holds at most % dimensions; model "%" has %',
            storage, most, model, dimensions
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN storage = 'vector' AND dimensions <= 4000 THEN 'Pass storage => ''halfvec'', or index => ''none''.'
                              ELSE 'Pass index => ''none''.' END;
    END IF;
END
$$;

-- SQL for the embeddings table's column type and its HNSW index's column
-- and operator class, by storage and distance.
CREATE OR REPLACE FUNCTION autoembed._embedding_type(ver autoembed.vectorizer_version)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('@extschema:vector@.%s(%s)', CASE ver.storage WHEN 'halfvec' THEN 'halfvec' ELSE 'vector' END,
                  ver.dimensions)
$$;

CREATE OR REPLACE FUNCTION autoembed._hnsw_column(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE ver.storage
        WHEN 'binary' THEN format('(@extschema:vector@.binary_quantize(embedding)::bit(%s)) '
                                  '@extschema:vector@.bit_hamming_ops', ver.dimensions)
        ELSE format('embedding @extschema:vector@.%s_%s_ops', ver.storage,
                    CASE v.distance WHEN 'cosine' THEN 'cosine' WHEN 'l2' THEN 'l2' ELSE 'ip' END)
    END
$$;

-- The row a version is recorded by, and its tables, for a vectorizer that
-- exists: the next ordinal, named objects, grants and row-level security
-- policies for the worker roles and for every role that may search the
-- vectorizer (080_grants.sql). Returns the version.
CREATE OR REPLACE FUNCTION autoembed._add_version(
    v autoembed.vectorizer, model text, dimensions int, storage text, state text, activate text DEFAULT 'auto')
RETURNS autoembed.vectorizer_version
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int := coalesce((SELECT max(x.ordinal) FROM autoembed.vectorizer_version AS x
                       WHERE x.vectorizer_id = v.id), 0) + 1;
    ver autoembed.vectorizer_version;
    taken text;
BEGIN
    SELECT string_agg(c.relname, ', ') INTO taken
    FROM pg_class AS c
    WHERE c.relnamespace = 'autoembed'::regnamespace
      AND c.relname = ANY (ARRAY(SELECT autoembed._version_name(v.name, n, k) FROM unnest(ARRAY[
              'queue', 'embeddings', 'postings', 'stats', 'hnsw', 'queue_pkey', 'queue_queued_at',
              'embeddings_pkey', 'chunk_id', 'postings_impact', 'postings_segment', 'stats_term']) AS k));
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: version % of vectorizer "%" needs names already taken in schema autoembed: %',
            n, v.name, taken USING ERRCODE = 'duplicate_table';
    END IF;
    INSERT INTO autoembed.vectorizer_version AS x (
        vectorizer_id, ordinal, model, dimensions, storage, state, activate,
        queue_table, embeddings_table, postings_table, stats_table, activated_at)
    VALUES (
        v.id, n, _add_version.model, _add_version.dimensions, _add_version.storage, _add_version.state,
        _add_version.activate,
        autoembed._version_name(v.name, n, 'queue'), autoembed._version_name(v.name, n, 'embeddings'),
        autoembed._version_name(v.name, n, 'postings'), autoembed._version_name(v.name, n, 'stats'),
        CASE WHEN _add_version.state = 'active' THEN now() END)
    RETURNING * INTO ver;
    PERFORM autoembed._create_version_tables(v, ver);
    PERFORM autoembed._create_bm25_tables(v, ver);
    PERFORM autoembed._secure_version(v, ver);
    RETURN ver;
END
$$;

CREATE OR REPLACE FUNCTION autoembed._create_version_tables(
    v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE autoembed.%I (%s, '
        'seq pg_catalog.xid8 NOT NULL, '
        'queued_at timestamptz NOT NULL DEFAULT pg_catalog.now(), '
        'claim_token uuid, claimed_seq pg_catalog.xid8, lease_until timestamptz, '
        'attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz, '
        'last_error text, failed_at timestamptz, '
        'CONSTRAINT %I PRIMARY KEY (%s))',
        ver.queue_table,
        autoembed._pk_fragment(v, '%1$I %2$s NOT NULL'),
        autoembed._version_name(v.name, ver.ordinal, 'queue_pkey'),
        autoembed._pk_fragment(v, '%1$I'));
    PERFORM autoembed._index_queue(v, ver);

    EXECUTE format(
        'CREATE TABLE autoembed.%I (%s, '
        'model_version_id int NOT NULL REFERENCES autoembed.model_version (id), '
        'chunk_no int NOT NULL CHECK (chunk_no >= 0), '
        'chunk text NOT NULL, '
        'embedding %s NOT NULL, '
        'lexemes tsvector NOT NULL, '
        'doc_len int NOT NULL, '
        'source_seq pg_catalog.xid8 NOT NULL, '
        'embedded_at timestamptz NOT NULL DEFAULT pg_catalog.now(), '
        'chunk_id bigint GENERATED ALWAYS AS IDENTITY, '
        'CONSTRAINT %I PRIMARY KEY (%s, model_version_id, chunk_no), '
        'CONSTRAINT %I UNIQUE (chunk_id))',
        ver.embeddings_table,
        autoembed._pk_fragment(v, '%1$I %2$s NOT NULL'),
        autoembed._embedding_type(ver),
        autoembed._version_name(v.name, ver.ordinal, 'embeddings_pkey'),
        autoembed._pk_fragment(v, '%1$I'),
        autoembed._version_name(v.name, ver.ordinal, 'chunk_id'));

    PERFORM autoembed._index_vectors(v, ver);

    -- Nobody reads these but their owner and the roles it grants.
    EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I FROM PUBLIC', ver.queue_table, ver.embeddings_table);
END
$$;

-- A version's vector index, as its vectorizer's index method says: built
-- when missing (hnsw), dropped (none). True when it built one.
CREATE OR REPLACE FUNCTION autoembed._index_vectors(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    index_name text := autoembed._version_name(v.name, ver.ordinal, 'hnsw');
    present boolean := to_regclass(format('autoembed.%I', index_name)) IS NOT NULL;
BEGIN
    IF v.index_method = 'hnsw' AND NOT present THEN
        EXECUTE format('CREATE INDEX %I ON autoembed.%I USING hnsw (%s)',
            index_name, ver.embeddings_table, autoembed._hnsw_column(v, ver));
        RETURN true;
    ELSIF v.index_method = 'none' AND present THEN
        EXECUTE format('DROP INDEX autoembed.%I', index_name);
    END IF;
    RETURN false;
END
$$;

-- The queue's order: claims take the rows queued most recently, or the
-- longest waiting (claim_batch, 050_queue.sql), either an index scan however
-- long the backlog; failed rows, never claimed again, are left out. Made for
-- a new version and, by every install (090_upgrade.sql), for the versions
-- of an earlier release.
CREATE OR REPLACE FUNCTION autoembed._index_queue(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON autoembed.%I (queued_at) WHERE failed_at IS NULL',
        autoembed._version_name(v.name, ver.ordinal, 'queue_queued_at'), ver.queue_table);
END
$$;

CREATE OR REPLACE FUNCTION autoembed._drop_version_tables(ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS autoembed.%I, autoembed.%I, autoembed.%I, autoembed.%I',
        ver.queue_table, ver.embeddings_table, ver.postings_table, ver.stats_table);
    EXECUTE format('DROP FUNCTION IF EXISTS autoembed.%I(int, text[])', autoembed._term_stats_function(ver));
END
$$;
