-- Changing a vectorizer: which columns it embeds, how it chunks, which model,
-- its vector index.
--
-- Each function checks everything first and then changes everything in the
-- caller's transaction, so a failed change leaves the vectorizer as it was.
-- Columns and chunking apply to every version: each requeues every source
-- row in every version's queue, and until a row is re-embedded its old
-- chunks stay searchable. A new model goes through a campaign instead, into
-- a version of its own (set_model, 047_lifecycle.sql).
-- pause(name) / resume(name) are in 040_vectorizer.sql.

-- The vectorizer, its catalog row locked against concurrent changes.
CREATE OR REPLACE FUNCTION autoembed._vectorizer_for_update(vectorizer_name text)
RETURNS autoembed.vectorizer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(vectorizer_name);
BEGIN
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM pg_class AS c WHERE c.oid = v.source) THEN
        RAISE EXCEPTION 'autoembed: the source table of vectorizer "%" no longer exists', v.name
            USING ERRCODE = 'undefined_table';
    END IF;
    RETURN v;
END
$$;

-- Queue every source row of one version for embedding (again): a backfill,
-- or a change that needs every row anew. A claim in flight is requeued by
-- its completion, as after any change to its row.
CREATE OR REPLACE FUNCTION autoembed._queue_all(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format(
        'INSERT INTO autoembed.%1$I AS q (%2$s, seq) '
        'SELECT %3$s, pg_catalog.pg_current_xact_id() FROM %4$s AS s '
        'ON CONFLICT (%2$s) DO UPDATE SET seq = EXCLUDED.seq, queued_at = pg_catalog.now(), '
        'attempts = 0, next_attempt_at = NULL, failed_at = NULL, last_error = NULL',
        ver.queue_table, autoembed._pk_fragment(v, '%1$I'), autoembed._pk_fragment(v, 's.%1$I'), v.source);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_notify('autoembed', v.id::text);
    RETURN n;
END
$$;

-- Every version: columns and chunking are the vectorizer's, whatever the model.
CREATE OR REPLACE FUNCTION autoembed._requeue_all(v autoembed.vectorizer)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM autoembed._queue_all(v, ver)
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
END
$$;

-- Embed other columns of the source table (in this order).
CREATE OR REPLACE FUNCTION autoembed.set_columns(name text, columns text[])
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
BEGIN
    PERFORM autoembed._check_columns(v.source, columns);
    IF v.columns = columns THEN
        RETURN;
    END IF;
    UPDATE autoembed.vectorizer AS x SET columns = set_columns.columns WHERE x.id = v.id
    RETURNING * INTO v;
    -- The UPDATE trigger watches the embedded columns, and the workers read
    -- the text through the source reader: both made anew.
    PERFORM autoembed._render_vectorizer(v);
    PERFORM autoembed._requeue_all(v);
END
$$;

-- Chunk differently: chunk_tokens per chunk (NULL: the model's maximum),
-- chunk_overlap tokens shared by neighbouring chunks (NULL: as now).
CREATE OR REPLACE FUNCTION autoembed.set_chunking(name text, chunk_tokens int, chunk_overlap int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
BEGIN
    chunk_overlap := coalesce(chunk_overlap, v.chunk_overlap);
    -- every version's model must take chunks this long
    PERFORM autoembed._check_chunking(
        (autoembed._resolve_model(ver.model, ver.dimensions)).model_max_seq_length, chunk_tokens, chunk_overlap)
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
    IF v.chunk_tokens IS NOT DISTINCT FROM chunk_tokens AND v.chunk_overlap = chunk_overlap THEN
        RETURN;
    END IF;
    UPDATE autoembed.vectorizer AS x
    SET chunk_tokens = set_chunking.chunk_tokens, chunk_overlap = set_chunking.chunk_overlap
    WHERE x.id = v.id RETURNING * INTO v;
    PERFORM autoembed._requeue_all(v);
END
$$;

-- Build or drop every version's vector index. For a large backfill: create
-- the vectorizer with index => 'none' (or set_index(name, 'none')), let the
-- workers embed everything, then set_index(name, 'hnsw') builds each index
-- once, cheaper than keeping it up to date chunk by chunk (~550 against ~800
-- µs of database CPU a chunk on SciFact, docs/performance.md). The
-- build is pgvector's CREATE INDEX in the caller's transaction: it uses the
-- session's maintenance_work_mem (the graph should fit: about the table's
-- vectors) and max_parallel_maintenance_workers; searches keep answering
-- (exactly, by a scan, until it is done), workers' writes wait for it.
-- Returns the number of indexes built.
CREATE OR REPLACE FUNCTION autoembed.set_index(name text, index text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    ver autoembed.vectorizer_version;
    built int := 0;
BEGIN
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id LOOP
        PERFORM autoembed._check_storage(ver.storage, index, ver.model, ver.dimensions);
    END LOOP;
    UPDATE autoembed.vectorizer AS x SET index_method = set_index.index WHERE x.id = v.id
    RETURNING * INTO v;
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id
               ORDER BY x.ordinal LOOP
        built := built + autoembed._index_vectors(v, ver)::int;
    END LOOP;
    RETURN built;
END
$$;
