-- The vectorizer lifecycle: create, drop, pause, resume, retry_failed.

CREATE OR REPLACE FUNCTION autoembed._vectorizer(vectorizer_name text)
RETURNS autoembed.vectorizer
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    IF vectorizer_name IS NULL THEN
        RAISE EXCEPTION 'autoembed: vectorizer name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.name = vectorizer_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no vectorizer named "%"', vectorizer_name
            USING ERRCODE = 'undefined_object',
                  HINT = autoembed._vectorizers_hint();
    END IF;
    RETURN v;
END
$$;

-- What a hint says about the vectorizers there are: their names (the first
-- 20), or how to make one.
CREATE OR REPLACE FUNCTION autoembed._vectorizers_hint()
RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN count(*) = 0
                THEN 'There is no vectorizer yet: SELECT autoembed.create_vectorizer(''TABLE'', ARRAY[''COLUMN'']) makes one.'
                ELSE 'The vectorizers: '
                     || string_agg('"' || x.name || '"', ', ' ORDER BY x.name) FILTER (WHERE x.n <= 20)
                     || CASE WHEN count(*) > 20 THEN format(' and %s more', count(*) - 20) ELSE '' END
                     || '.'
           END
    FROM (SELECT v.name, row_number() OVER (ORDER BY v.name) AS n FROM autoembed.vectorizer AS v) AS x
$$;

CREATE OR REPLACE FUNCTION autoembed._vectorizer_by_id(vectorizer_id int)
RETURNS autoembed.vectorizer
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
BEGIN
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: no vectorizer with id %', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v;
END
$$;

-- Check that columns names text columns of source.
CREATE OR REPLACE FUNCTION autoembed._check_columns(source regclass, columns text[])
RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col text;
    att record;
BEGIN
    IF columns IS NULL OR cardinality(columns) = 0 THEN
        RAISE EXCEPTION 'autoembed: columns must name at least one text column of %', source
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: columns must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT count(DISTINCT c) FROM unnest(columns) AS c) <> cardinality(columns) THEN
        RAISE EXCEPTION 'autoembed: columns % names a column twice', columns USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY columns LOOP
        SELECT format_type(a.atttypid, a.atttypmod) AS typname, t.typcategory INTO att
        FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
        WHERE a.attrelid = source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'autoembed: column "%" does not exist in table %', col, source
                USING ERRCODE = 'undefined_column';
        END IF;
        IF att.typcategory <> 'S' THEN
            RAISE EXCEPTION 'autoembed: column "%" of table % has type %, not a text type', col, source, att.typname
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Embed text, varchar or char columns; add a generated text column to embed anything else.';
        END IF;
    END LOOP;
END
$$;

-- Check chunk_tokens (NULL: the model's maximum) and chunk_overlap for a
-- model whose maximum sequence length is max_len (NULL: unknown).
DROP FUNCTION IF EXISTS autoembed._check_chunking(text, int, int, int);
CREATE OR REPLACE FUNCTION autoembed._check_chunking(max_len int, chunk_tokens int, chunk_overlap int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF chunk_tokens IS NOT NULL AND (chunk_tokens < 8 OR chunk_tokens > coalesce(max_len, chunk_tokens)) THEN
        RAISE EXCEPTION 'autoembed: chunk_tokens must be between 8 and the model''s maximum sequence length (%), got %',
            max_len, chunk_tokens USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF chunk_overlap IS NULL OR chunk_overlap < 0
            OR chunk_overlap * 2 >= coalesce(chunk_tokens, max_len, 2147483647) THEN
        RAISE EXCEPTION 'autoembed: chunk_overlap must be at least 0 and less than half of chunk_tokens, got %',
            chunk_overlap USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION autoembed.create_vectorizer(
    source regclass,
    columns text[],
    name text DEFAULT NULL,
    model text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
    dimensions int DEFAULT NULL,
    chunk_tokens int DEFAULT NULL,
    chunk_overlap int DEFAULT 32,
    ts_config regconfig DEFAULT 'english',
    bm25_k1 float8 DEFAULT 1.2,
    bm25_b float8 DEFAULT 0.5,
    distance text DEFAULT 'cosine',
    index text DEFAULT 'hnsw',
    backfill boolean DEFAULT true,
    max_attempts int DEFAULT 6,
    retry_delay interval DEFAULT '10 seconds',
    storage text DEFAULT 'vector')
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel          record;
    pk_cols      text[];
    pk_typs      text[];
    col          text;
    vname        text;
    resolved     record;
    vector_schema name;
    v            autoembed.vectorizer;
    ver          autoembed.vectorizer_version;
BEGIN
    -- 1. Validate everything before creating anything.
    IF source IS NULL THEN
        RAISE EXCEPTION 'autoembed: source table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind, c.relname, n.nspname INTO rel
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = source;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'autoembed: % is not a table (relkind %); only tables can be vectorized', source, rel.relkind
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF rel.nspname = 'autoembed' THEN
        RAISE EXCEPTION 'autoembed: % belongs to autoembed itself and cannot be vectorized', source
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT array_agg(a.attname::text ORDER BY k.ord),
           array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
    INTO pk_cols, pk_typs
    FROM pg_index AS i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = source AND i.indisprimary;
    IF pk_cols IS NULL THEN
        RAISE EXCEPTION 'autoembed: table % has no primary key', source
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'autoembed identifies rows by their primary key; add one with ALTER TABLE ... ADD PRIMARY KEY.';
    END IF;

    -- The key is copied into autoembed's own tables next to their columns.
    SELECT string_agg(format('"%s"', c), ', ') INTO col
    FROM unnest(pk_cols) AS c
    WHERE c = ANY (ARRAY['seq', 'queued_at', 'claim_token', 'claimed_seq', 'lease_until', 'attempts',
                         'next_attempt_at', 'last_error', 'failed_at', 'model_version_id',
                         'chunk_no', 'chunk', 'embedding', 'lexemes', 'doc_len', 'source_seq',
                         'embedded_at', 'chunk_id']);
    IF col IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: the primary key of % has a column named %, a name autoembed uses for its own columns',
            source, col
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Reserved: seq, queued_at, claim_token, claimed_seq, lease_until, attempts, next_attempt_at, '
                      || 'last_error, failed_at, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len, '
                      || 'source_seq, embedded_at, chunk_id.';
    END IF;

    PERFORM autoembed._check_columns(source, columns);

    vname := coalesce(name, rel.relname::text);
    IF btrim(vname) = '' THEN
        RAISE EXCEPTION 'autoembed: vectorizer name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM autoembed.vectorizer AS x WHERE x.name = vname) THEN
        RAISE EXCEPTION 'autoembed: a vectorizer named "%" already exists', vname
            USING ERRCODE = 'duplicate_object',
                  HINT = CASE WHEN name IS NULL THEN 'Pass name => ''...'' to choose another name.'
                              ELSE 'Choose another name, or drop the existing one with autoembed.drop_vectorizer(name).' END;
    END IF;

    SELECT * INTO resolved FROM autoembed._resolve_model(model, dimensions);

    PERFORM autoembed._check_chunking(resolved.model_max_seq_length, chunk_tokens, chunk_overlap);
    IF ts_config IS NULL THEN
        RAISE EXCEPTION 'autoembed: ts_config must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM autoembed._check_bm25(bm25_k1, bm25_b);
    IF distance IS NULL OR distance NOT IN ('cosine', 'l2', 'inner_product') THEN
        RAISE EXCEPTION 'autoembed: distance must be cosine, l2 or inner_product, got %', coalesce(distance, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM autoembed._check_storage(storage, index, resolved.model_name, resolved.model_dimensions);
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'autoembed: max_attempts must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retry_delay IS NULL OR retry_delay < interval '0' THEN
        RAISE EXCEPTION 'autoembed: retry_delay must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF backfill IS NULL THEN
        RAISE EXCEPTION 'autoembed: backfill must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    SELECT n.nspname INTO vector_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector';
    IF vector_schema IS NULL THEN
        RAISE EXCEPTION 'autoembed: the pgvector extension is not installed in this database'
            USING ERRCODE = 'undefined_object', HINT = 'Run autoembed install, or CREATE EXTENSION vector.';
    END IF;

    -- 2. Record it, then create its objects. One transaction: an error
    --    anywhere leaves nothing behind.
    INSERT INTO autoembed.vectorizer AS x (
        name, source, columns, pk_columns, pk_types, chunk_tokens, chunk_overlap,
        ts_config, bm25_k1, bm25_b, distance, index_method, max_attempts, retry_delay,
        inbox_table, embeddings_table, sync_function)
    VALUES (
        vname, source, columns, pk_cols, pk_typs, chunk_tokens, chunk_overlap, ts_config::text,
        bm25_k1, bm25_b, distance, index, max_attempts, retry_delay,
        autoembed._derived_name(vname, '_inbox'), autoembed._derived_name(vname, '_embeddings'),
        autoembed._derived_name(vname, '_sync'))
    RETURNING * INTO v;

    IF EXISTS (SELECT 1 FROM pg_class AS c
               WHERE c.relnamespace = 'autoembed'::regnamespace
                 AND c.relname IN (v.inbox_table, v.embeddings_table)) THEN
        RAISE EXCEPTION 'autoembed: the tables for vectorizer "%" already exist in schema autoembed', vname
            USING ERRCODE = 'duplicate_table';
    END IF;

    PERFORM autoembed._create_inbox(v);
    ver := autoembed._add_version(v, resolved.model_name, resolved.model_dimensions, storage, 'active');
    PERFORM autoembed._render_vectorizer(v);
    PERFORM autoembed._grant_worker_objects(v, r.role) FROM autoembed._worker_roles() AS r;

    IF backfill THEN
        PERFORM autoembed._queue_all(v, ver);
    END IF;
    RETURN v.id;
END
$$;

CREATE OR REPLACE FUNCTION autoembed.drop_vectorizer(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    PERFORM autoembed._drop_objects(v);
    DELETE FROM autoembed.vectorizer AS x WHERE x.id = v.id;
END
$$;

CREATE OR REPLACE FUNCTION autoembed.pause(name text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE autoembed.vectorizer AS x SET paused = true WHERE x.id = (autoembed._vectorizer($1)).id
$$;

CREATE OR REPLACE FUNCTION autoembed.resume(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    UPDATE autoembed.vectorizer AS x SET paused = false WHERE x.id = v.id;
    PERFORM pg_notify('autoembed', v.id::text);
END
$$;

-- Requeue every failed row of a vectorizer (of every version); returns how many.
CREATE OR REPLACE FUNCTION autoembed.retry_failed(name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version;
    n bigint;
    total bigint := 0;
BEGIN
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id ORDER BY x.ordinal LOOP
        EXECUTE format(
            'UPDATE autoembed.%I SET failed_at = NULL, attempts = 0, next_attempt_at = NULL, '
            'claim_token = NULL, lease_until = NULL WHERE failed_at IS NOT NULL',
            ver.queue_table);
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    IF total > 0 THEN
        PERFORM pg_notify('autoembed', v.id::text);
    END IF;
    RETURN total;
END
$$;
