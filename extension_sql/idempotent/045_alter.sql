-- Changing a vectorizer: which columns it embeds, how it chunks, which model.
--
-- Each function checks everything first and then changes everything in the
-- caller's transaction, so a failed change leaves the vectorizer as it was.
-- Each requeues every source row; the workers re-embed them in the
-- background. Until a row is re-embedded its old chunks stay searchable
-- (columns, chunking), or, for a new model, the row is not found: vectors of
-- two models are never mixed, and the old model's vectors are dropped.
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

-- Queue every source row for embedding again (a claim in flight is requeued
-- by its completion, as after any change to its row).
CREATE OR REPLACE FUNCTION autoembed._requeue_all(v autoembed.vectorizer)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO autoembed.%1$I AS q (%2$s, seq) '
        'SELECT %3$s, pg_catalog.pg_current_xact_id() FROM %4$s AS s '
        'ON CONFLICT (%2$s) DO UPDATE SET seq = EXCLUDED.seq, queued_at = pg_catalog.now(), '
        'attempts = 0, next_attempt_at = NULL, failed_at = NULL, last_error = NULL',
        v.queue_table, autoembed._pk_fragment(v, '%1$I'), autoembed._pk_fragment(v, 's.%1$I'), v.source);
    PERFORM pg_notify('autoembed', v.id::text);
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
    op text;
BEGIN
    PERFORM autoembed._check_columns(v.source, columns);
    IF v.columns = columns THEN
        RETURN;
    END IF;
    UPDATE autoembed.vectorizer AS x SET columns = set_columns.columns WHERE x.id = v.id
    RETURNING * INTO v;
    -- The UPDATE trigger watches the embedded columns: make it anew.
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate', 'moves'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('autoembed_%s_%s', v.id, op), v.source);
    END LOOP;
    PERFORM autoembed._create_triggers(v);
    -- The workers read the text through the source reader: it reads the new columns.
    PERFORM autoembed._create_source_function(v);
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
    PERFORM autoembed._check_chunking(
        (autoembed._resolve_model(v.model, v.dimensions)).model_max_seq_length, chunk_tokens, chunk_overlap);
    IF v.chunk_tokens IS NOT DISTINCT FROM chunk_tokens AND v.chunk_overlap = chunk_overlap THEN
        RETURN;
    END IF;
    UPDATE autoembed.vectorizer AS x
    SET chunk_tokens = set_chunking.chunk_tokens, chunk_overlap = set_chunking.chunk_overlap
    WHERE x.id = v.id RETURNING * INTO v;
    PERFORM autoembed._requeue_all(v);
END
$$;

-- Embed with another model. The old model's vectors are dropped at once
-- (searches find rows again as they are re-embedded), the embeddings column
-- takes the new model's dimensions, and every claim in flight is withdrawn
-- so that no worker still running the old model writes again.
CREATE OR REPLACE FUNCTION autoembed.set_model(name text, model text, dimensions int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    resolved record;
    vector_schema name;
BEGIN
    SELECT * INTO resolved FROM autoembed._resolve_model(model, dimensions);
    PERFORM autoembed._check_chunking(resolved.model_max_seq_length, v.chunk_tokens, v.chunk_overlap);
    IF v.index_method = 'hnsw' AND resolved.model_dimensions > 2000 THEN
        RAISE EXCEPTION 'autoembed: an hnsw index holds at most 2000 dimensions; model "%" has %',
            resolved.model_name, resolved.model_dimensions USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v.model = resolved.model_name AND v.dimensions = resolved.model_dimensions THEN
        RETURN;
    END IF;
    SELECT n.nspname INTO vector_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector';

    EXECUTE format('TRUNCATE autoembed.%I, autoembed.%I, autoembed.%I',
        v.embeddings_table, v.postings_table, v.stats_table);
    IF v.dimensions <> resolved.model_dimensions THEN
        EXECUTE format('ALTER TABLE autoembed.%I ALTER COLUMN embedding TYPE %I.vector(%s)',
            v.embeddings_table, vector_schema, resolved.model_dimensions);
    END IF;
    EXECUTE format('UPDATE autoembed.%I SET claim_token = NULL, lease_until = NULL', v.queue_table);
    UPDATE autoembed.vectorizer AS x
    SET model = resolved.model_name, dimensions = resolved.model_dimensions, active_version_id = NULL
    WHERE x.id = v.id RETURNING * INTO v;
    PERFORM autoembed._requeue_all(v);
END
$$;
