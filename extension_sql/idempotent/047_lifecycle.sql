-- The model lifecycle: change the model without an outage.
--
-- A vectorizer has versions (035_version_tables.sql), one per model:
--
--   set_model ──► building ──(campaign done)──► active      (activate => 'auto')
--                    │                      └─► ready       (activate => 'manual', or rows failed)
--                    └── cancel_campaign / drop_version ──► gone
--   activate_version(ready or retired) ──► active, and the active one ──► retired
--   rollback ──► the most recently retired ──► active
--   drop_version / gc_versions (not the active one) ──► gone
--
-- Searches use the active version (or the one they name); the switch is one
-- transaction, so a search sees the old version or the new one, never a mix.
-- Every version is kept current: each change to the source table is queued
-- for every version (050_queue.sql, _merge_inbox), fresh work for the
-- active version first (worker/drain.py). So a campaign's version is
-- complete when its queue is empty, and a retired one can be made active
-- again at once. gc_versions stops paying for the retired ones.

-- A version of v named by `version`: NULL or 'active' for the active one,
-- 'building' for a campaign's, a number for version N, a model version's tag,
-- or a model name (short names as create_vectorizer takes them).
CREATE OR REPLACE FUNCTION autoembed._version(v autoembed.vectorizer, version text)
RETURNS autoembed.vectorizer_version
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_versions autoembed.vectorizer_version[];
BEGIN
    SELECT array_agg(x ORDER BY x.ordinal) INTO found_versions
    FROM autoembed.vectorizer_version AS x
    LEFT JOIN autoembed.model_version AS mv ON mv.id = x.model_version_id
    WHERE x.vectorizer_id = v.id
      AND CASE
          WHEN version IS NULL OR version = 'active' THEN x.state = 'active'
          WHEN version = 'building' THEN x.state = 'building'
          WHEN version ~ '^[0-9]{1,9}$' THEN x.ordinal = version::int
          ELSE mv.tag = version OR x.model = version
               -- a short name, perhaps with a backend prefix (onnx-int8:all-MiniLM-L6-v2)
               OR x.model = regexp_replace(version, '^((onnx|onnx-int8):)?', '\1sentence-transformers/')
      END;
    IF cardinality(found_versions) = 1 THEN
        RETURN found_versions[1];
    END IF;
    IF version IS NULL OR version = 'active' THEN
        RAISE EXCEPTION 'autoembed: vectorizer "%" has no active version', v.name
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RAISE EXCEPTION 'autoembed: vectorizer "%" has % version "%"', v.name,
        CASE WHEN found_versions IS NULL THEN 'no' ELSE 'more than one' END, version
        USING ERRCODE = CASE WHEN found_versions IS NULL THEN 'undefined_object' ELSE 'ambiguous_parameter' END,
              HINT = format('Its versions: %s. Name one by number, model or tag.',
                  (SELECT string_agg(format('%s (%s%s, %s)', x.ordinal, x.model,
                                            CASE WHEN x.storage <> 'vector' THEN ' as ' || x.storage ELSE '' END,
                                            x.state), ', ' ORDER BY x.ordinal)
                   FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id));
END
$$;

-- A version the caller names on purpose (activate, drop): NULL is refused
-- rather than taken for the active one.
CREATE OR REPLACE FUNCTION autoembed._named_version(v autoembed.vectorizer, version text)
RETURNS autoembed.vectorizer_version
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF version IS NULL THEN
        RAISE EXCEPTION 'autoembed: version must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name it by number, model or tag: SELECT version, model, state FROM autoembed.vectorizer_versions;';
    END IF;
    RETURN autoembed._version(v, version);
END
$$;

-- Make version ver of v the active one; the active one becomes retired.
-- The caller holds v's row (FOR UPDATE or FOR SHARE).
CREATE OR REPLACE FUNCTION autoembed._activate(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE autoembed.vectorizer_version AS x SET state = 'retired', retired_at = now()
    WHERE x.vectorizer_id = v.id AND x.state = 'active' AND x.id <> ver.id;
    UPDATE autoembed.vectorizer_version AS x
    SET state = 'active', activated_at = now(), retired_at = NULL,
        completed_at = coalesce(x.completed_at, now())
    WHERE x.id = ver.id;
    PERFORM pg_notify('autoembed', v.id::text);   -- workers: another version goes first now
END
$$;

-- A campaign's version whose queue holds nothing pending or in flight is
-- complete: it becomes active (activate => 'auto') or ready; with failed
-- rows it becomes ready and says so (activate_version, after retry_failed
-- or not, decides). Returns whether it finished. Called by complete_batch
-- and by workers that run out of work (several may finish at once).
CREATE OR REPLACE FUNCTION autoembed._finish_campaign(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    busy boolean;
    failed bigint;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT FROM autoembed.%I WHERE failed_at IS NULL)', ver.queue_table) INTO busy;
    IF busy THEN
        RETURN false;
    END IF;
    SELECT * INTO ver FROM autoembed.vectorizer_version AS x WHERE x.id = ver.id FOR NO KEY UPDATE;
    IF NOT FOUND OR ver.state <> 'building' THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT count(*) FROM autoembed.%I', ver.queue_table) INTO failed;
    UPDATE autoembed.vectorizer_version AS x SET completed_at = now() WHERE x.id = ver.id;
    IF failed > 0 OR ver.activate = 'manual' THEN
        UPDATE autoembed.vectorizer_version AS x SET state = 'ready',
            last_error = CASE WHEN failed > 0 THEN format(
                '%s rows failed to embed, so the campaign did not switch: autoembed.failed_rows(%L) lists them, '
                'autoembed.retry_failed(%L) retries them, autoembed.activate_version(%L, %L) switches anyway',
                failed, v.name, v.name, v.name, ver.ordinal::text) END,
            last_error_at = CASE WHEN failed > 0 THEN now() END
        WHERE x.id = ver.id;
    ELSE
        PERFORM autoembed._activate(v, ver);
    END IF;
    RETURN true;
END
$$;

-- For workers that find no more work: finish the vectorizer's campaign if
-- its queue is empty (a backstop for completions that raced).
CREATE OR REPLACE FUNCTION autoembed.finish_campaign(vectorizer_id int)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
BEGIN
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = finish_campaign.vectorizer_id FOR SHARE;
    SELECT * INTO ver FROM autoembed.vectorizer_version AS x
    WHERE x.vectorizer_id = v.id AND x.state = 'building';
    RETURN FOUND AND autoembed._finish_campaign(v, ver);
END
$$;

-- Drop a version that is not active: its tables, its row, its branch of the
-- view. Waits for transactions writing to it (see _delete_chunks).
CREATE OR REPLACE FUNCTION autoembed._drop_version(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ver.state = 'active' THEN
        RAISE EXCEPTION 'autoembed: version % (%) is the active version of vectorizer "%"', ver.ordinal, ver.model, v.name
            USING ERRCODE = 'object_in_use',
                  HINT = 'Activate another version first: autoembed.activate_version(name, version) or autoembed.rollback(name).';
    END IF;
    -- no merge into its queue meanwhile (050_queue.sql)
    PERFORM pg_advisory_xact_lock(hashtext('autoembed.merge_inbox'), v.id);
    DELETE FROM autoembed.vectorizer_version AS x WHERE x.id = ver.id;
    PERFORM autoembed._create_embeddings_view(v);   -- without it, before its tables go
    PERFORM autoembed._drop_version_tables(ver);
END
$$;

-- Embed the vectorizer with another model, or store its vectors another
-- way (storage: vector, halfvec or binary, 035_version_tables.sql; NULL
-- keeps the active version's), without an outage: registers them as a new
-- version and queues every row for it (a re-embedding campaign); returns at once, removes nothing. Workers embed the campaign
-- in the background, after fresh changes; every change meanwhile is
-- embedded for both versions. When the campaign is complete the new version
-- becomes active (activate => 'auto') or ready for activate_version
-- (activate => 'manual'). Returns the version's number. A version is a
-- model and a storage; for the model and storage asked:
--   * the active version's: nothing to do (a running campaign is cancelled);
--   * a campaign's: it goes on (activate is updated);
--   * a ready or retired version's: it is current, so it is reused
--     (activated now with activate => 'auto');
--   * another one while a campaign runs: an error (cancel_campaign first).
CREATE OR REPLACE FUNCTION autoembed.set_model(
    name text, model text, dimensions int DEFAULT NULL, activate text DEFAULT 'auto', storage text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    resolved record;
    building autoembed.vectorizer_version;
    target autoembed.vectorizer_version;
    active autoembed.vectorizer_version;
    stored text := storage;
BEGIN
    IF activate IS NULL OR activate NOT IN ('auto', 'manual') THEN
        RAISE EXCEPTION 'autoembed: activate must be auto or manual, got %', coalesce(activate, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO resolved FROM autoembed._resolve_model(model, dimensions);
    PERFORM autoembed._check_chunking(resolved.model_max_seq_length, v.chunk_tokens, v.chunk_overlap);
    SELECT * INTO active FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id AND x.state = 'active';
    stored := coalesce(stored, active.storage, 'vector');
    PERFORM autoembed._check_storage(stored, v.index_method, resolved.model_name, resolved.model_dimensions);
    SELECT * INTO building FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id AND x.state = 'building';
    SELECT * INTO target FROM autoembed.vectorizer_version AS x
    WHERE x.vectorizer_id = v.id AND x.model = resolved.model_name AND x.dimensions = resolved.model_dimensions
      AND x.storage = stored;

    IF target.state = 'active' THEN
        IF building.id IS NOT NULL THEN
            PERFORM autoembed._drop_version(v, building);
            RAISE NOTICE 'autoembed: cancelled the campaign of vectorizer "%" to %', v.name, building.model;
        END IF;
        RETURN target.ordinal;
    ELSIF target.state = 'building' THEN
        UPDATE autoembed.vectorizer_version AS x SET activate = set_model.activate WHERE x.id = target.id;
        PERFORM autoembed._finish_campaign(v, target);
        RETURN target.ordinal;
    END IF;
    IF building.id IS NOT NULL THEN
        RAISE EXCEPTION 'autoembed: vectorizer "%" is already re-embedding with %; one campaign at a time',
            v.name, building.model
            USING ERRCODE = 'object_in_use',
                  HINT = format('Wait for it (autoembed.vectorizer_versions), or cancel it: SELECT autoembed.cancel_campaign(%L);',
                                v.name);
    END IF;
    IF target.id IS NOT NULL THEN
        -- ready or retired: complete and kept current
        IF activate = 'auto' THEN
            PERFORM autoembed._activate(v, target);
        END IF;
        RETURN target.ordinal;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'autoembed: set_model must run at isolation level read committed, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Its backfill must see every row committed before it; run it in a read committed transaction.';
    END IF;
    -- No change is merged into the queues until this commits: a change
    -- committed before the backfill below reads the source table is in it,
    -- and any later one is merged into the new version's queue too.
    PERFORM pg_advisory_xact_lock(hashtext('autoembed.merge_inbox'), v.id);
    target := autoembed._add_version(v, resolved.model_name, resolved.model_dimensions, stored, 'building', activate);
    PERFORM autoembed._create_embeddings_view(v);
    PERFORM autoembed._queue_all(v, target);
    PERFORM autoembed._finish_campaign(v, target);   -- an empty table has nothing to wait for
    RETURN target.ordinal;
END
$$;

-- Make a version active now: a ready one (a campaign with activate =>
-- 'manual') or a retired one. Returns its number.
CREATE OR REPLACE FUNCTION autoembed.activate_version(name text, version text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    ver autoembed.vectorizer_version;
BEGIN
    ver := autoembed._named_version(v, version);
    IF ver.state = 'building' THEN
        RAISE EXCEPTION 'autoembed: version % (%) of vectorizer "%" is still being embedded', ver.ordinal, ver.model, v.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Its progress: SELECT * FROM autoembed.vectorizer_versions; with activate => ''auto'' it '
                      || 'becomes active by itself when complete.';
    END IF;
    IF ver.state <> 'active' THEN
        PERFORM autoembed._activate(v, ver);
    END IF;
    RETURN ver.ordinal;
END
$$;

-- Make the version that was active before the active one active again (its
-- vectors were kept current). Returns its number.
CREATE OR REPLACE FUNCTION autoembed.rollback(name text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    ver autoembed.vectorizer_version;
BEGIN
    SELECT * INTO ver FROM autoembed.vectorizer_version AS x
    WHERE x.vectorizer_id = v.id AND x.state = 'retired'
    ORDER BY x.retired_at DESC, x.ordinal DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'autoembed: vectorizer "%" has no earlier version to roll back to', v.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Retired versions are kept until drop_version or gc_versions drops them.';
    END IF;
    PERFORM autoembed._activate(v, ver);
    RETURN ver.ordinal;
END
$$;

-- Abandon the running campaign: drop its version. Returns its number, or
-- NULL (with a notice) when none runs.
CREATE OR REPLACE FUNCTION autoembed.cancel_campaign(name text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    ver autoembed.vectorizer_version;
BEGIN
    SELECT * INTO ver FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id AND x.state = 'building';
    IF NOT FOUND THEN
        RAISE NOTICE 'autoembed: vectorizer "%" runs no campaign', v.name;
        RETURN NULL;
    END IF;
    PERFORM autoembed._drop_version(v, ver);
    RETURN ver.ordinal;
END
$$;

-- Drop a version that is not active (its vectors, BM25 tables and queue).
CREATE OR REPLACE FUNCTION autoembed.drop_version(name text, version text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
BEGIN
    PERFORM autoembed._drop_version(v, autoembed._named_version(v, version));
END
$$;

-- Drop the retired versions but the `keep` most recently retired; returns
-- how many were dropped.
CREATE OR REPLACE FUNCTION autoembed.gc_versions(name text, keep int DEFAULT 0)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer_for_update(name);
    ver autoembed.vectorizer_version;
    n int := 0;
BEGIN
    IF keep IS NULL OR keep < 0 THEN
        RAISE EXCEPTION 'autoembed: keep must be at least 0, got %', coalesce(keep::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x
               WHERE x.vectorizer_id = v.id AND x.state = 'retired'
               ORDER BY x.retired_at DESC, x.ordinal DESC OFFSET keep LOOP
        PERFORM autoembed._drop_version(v, ver);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
