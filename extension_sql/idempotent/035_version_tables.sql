-- A version's own tables: everything that depends on the model.
--
--   queue       one row per key the version still has to embed, and its
--               claim state (050_queue.sql);
--   embeddings  the chunks, their vector(dimensions) and lexemes, keyed by
--               (key, model version, chunk), and by a chunk_id the BM25
--               postings use; its own HNSW index;
--   postings, stats   BM25 over the same chunks (065_bm25.sql).
-- Named <vectorizer>_<kind>_v<ordinal>. Dropping a version drops them.

-- The row a version is recorded by, and its tables, for a vectorizer that
-- exists: the next ordinal, named objects, grants and row-level security
-- policies for the worker roles and for every role that may search the
-- vectorizer (080_grants.sql). Returns the version.
CREATE OR REPLACE FUNCTION autoembed._add_version(
    v autoembed.vectorizer, model text, dimensions int, state text, activate text DEFAULT 'auto')
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
              'queue', 'embeddings', 'postings', 'stats', 'hnsw', 'queue_pkey', 'queue_queued_at', 'embeddings_pkey',
              'chunk_id', 'postings_impact', 'postings_term', 'postings_chunk', 'stats_term']) AS k));
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: version % of vectorizer "%" needs names already taken in schema autoembed: %',
            n, v.name, taken USING ERRCODE = 'duplicate_table';
    END IF;
    INSERT INTO autoembed.vectorizer_version AS x (
        vectorizer_id, ordinal, model, dimensions, state, activate,
        queue_table, embeddings_table, postings_table, stats_table, activated_at)
    VALUES (
        v.id, n, _add_version.model, _add_version.dimensions, _add_version.state, _add_version.activate,
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
DECLARE
    opclass text := CASE v.distance
        WHEN 'cosine' THEN 'vector_cosine_ops'
        WHEN 'l2' THEN 'vector_l2_ops'
        ELSE 'vector_ip_ops' END;
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
        'embedding @extschema:vector@.vector(%s) NOT NULL, '
        'lexemes tsvector NOT NULL, '
        'doc_len int NOT NULL, '
        'source_seq pg_catalog.xid8 NOT NULL, '
        'embedded_at timestamptz NOT NULL DEFAULT pg_catalog.now(), '
        'chunk_id bigint GENERATED ALWAYS AS IDENTITY, '
        'CONSTRAINT %I PRIMARY KEY (%s, model_version_id, chunk_no), '
        'CONSTRAINT %I UNIQUE (chunk_id))',
        ver.embeddings_table,
        autoembed._pk_fragment(v, '%1$I %2$s NOT NULL'),
        ver.dimensions,
        autoembed._version_name(v.name, ver.ordinal, 'embeddings_pkey'),
        autoembed._pk_fragment(v, '%1$I'),
        autoembed._version_name(v.name, ver.ordinal, 'chunk_id'));

    IF v.index_method = 'hnsw' THEN
        EXECUTE format('CREATE INDEX %I ON autoembed.%I USING hnsw (embedding @extschema:vector@.%I)',
            autoembed._version_name(v.name, ver.ordinal, 'hnsw'), ver.embeddings_table, opclass);
    END IF;

    -- Nobody reads these but their owner and the roles it grants.
    EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I FROM PUBLIC', ver.queue_table, ver.embeddings_table);
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
