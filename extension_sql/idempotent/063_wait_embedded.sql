-- Read-your-writes: wait until a committed change is searchable.
--
--   SELECT autoembed.wait_embedded('tickets', '{"id": 42}');   -- one row
--   SELECT autoembed.wait_embedded('tickets');                 -- every change
--       committed before the call (e.g. the caller's previous transaction)
--
-- Returns true once nothing of it is pending in the version waited for (the
-- active one by default), false when timeout passes first; a row that failed
-- to embed raises its error. Polls in READ COMMITTED (each look sees what
-- workers committed since); in REPEATABLE READ or SERIALIZABLE nothing could
-- ever change, so it refuses. A row changed again by a later transaction is
-- waited for until that change is embedded too.

-- How much of it is still pending (and a failed row's error), read as
-- autoembed's owner: the queue is not readable by searchers. Only a session
-- whose login role may SELECT the source table and search the vectorizer
-- gets an answer (a session can always act as its login role). Whether a
-- key it names is pending is all it learns.
CREATE OR REPLACE FUNCTION autoembed._pending(name text, version text, key jsonb, up_to pg_catalog.xid8)
RETURNS TABLE (pending bigint, failed text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
    keycols text := autoembed._pk_fragment(v, '%1$I %2$s');
BEGIN
    IF NOT has_table_privilege(session_user, v.source, 'SELECT')
       OR NOT has_table_privilege(session_user, format('autoembed.%I', v.embeddings_table), 'SELECT') THEN
        RAISE EXCEPTION 'autoembed: role % may not search vectorizer "%"', session_user, v.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Its owner runs: SELECT autoembed.grant_search(%L, %L); and GRANT SELECT ON %s',
                                v.name, session_user, v.source);
    END IF;
    IF key IS NULL THEN
        RETURN QUERY EXECUTE format(
            'SELECT (SELECT count(*) FROM autoembed.%I AS i WHERE i.seq <= $1) '
            '     + (SELECT count(*) FROM autoembed.%I AS q WHERE q.seq <= $1 AND q.failed_at IS NULL), '
            '       NULL::text',
            v.inbox_table, ver.queue_table)
            USING up_to;
    ELSE
        RETURN QUERY EXECUTE format(
            'SELECT (SELECT count(*) FROM autoembed.%1$I AS i, jsonb_to_record($1) AS k(%3$s) '
            '        WHERE EXISTS (SELECT 1 FROM unnest(%4$s) AS u(%6$s) WHERE %7$s)) '
            '     + (SELECT count(*) FROM autoembed.%2$I AS q, jsonb_to_record($1) AS k(%3$s) '
            '        WHERE %5$s AND q.failed_at IS NULL), '
            '       (SELECT q.last_error FROM autoembed.%2$I AS q, jsonb_to_record($1) AS k(%3$s) '
            '        WHERE %5$s AND q.failed_at IS NOT NULL)',
            v.inbox_table, ver.queue_table, keycols,
            -- the inbox holds each statement's keys as arrays, one per key column
            autoembed._pk_fragment(v, 'i.%1$I'),
            autoembed._pk_join(v, 'q', 'k'),
            autoembed._pk_fragment(v, '%1$I'),
            autoembed._pk_join(v, 'u', 'k'))
            USING key;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION autoembed._pending(text, text, jsonb, pg_catalog.xid8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION autoembed._pending(text, text, jsonb, pg_catalog.xid8) TO PUBLIC;

CREATE OR REPLACE FUNCTION autoembed.wait_embedded(
    name text, key jsonb DEFAULT NULL, timeout interval DEFAULT '30 seconds', version text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    typed jsonb;
    visible boolean;
    -- every transaction that committed before this call has an id below this
    up_to pg_catalog.xid8 := pg_snapshot_xmax(pg_current_snapshot());
    deadline timestamptz;
    state record;
    pause float8 := 0.005;
BEGIN
    IF timeout IS NULL OR timeout < interval '0' THEN
        RAISE EXCEPTION 'autoembed: timeout must be a non-negative interval, got %', coalesce(timeout::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'autoembed: wait_embedded needs READ COMMITTED (this transaction is %): it would never see a worker''s commit',
            upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Call it in its own transaction, after committing the change.';
    END IF;
    PERFORM autoembed._version(v, version);
    IF key IS NOT NULL THEN
        typed := autoembed._typed_key(v, key);
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s AS s, jsonb_to_record($1) AS k(%s) WHERE %s)',
                       v.source, autoembed._pk_fragment(v, '%1$I %2$s'), autoembed._pk_join(v, 's', 'k'))
            INTO visible USING typed;
        IF NOT visible THEN
            RAISE EXCEPTION 'autoembed: % has no row % (or you may not see it)', v.source, typed
                USING ERRCODE = 'no_data_found',
                      HINT = 'A DELETE needs no wait: its chunks go in the same transaction.';
        END IF;
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        SELECT * INTO state FROM autoembed._pending(name, version, typed, up_to);
        IF state.failed IS NOT NULL THEN
            RAISE EXCEPTION 'autoembed: row % of vectorizer "%" failed to embed: %', typed, v.name, state.failed
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Fix the row or the cause, then SELECT autoembed.retry_failed(%L);', v.name);
        END IF;
        IF state.pending = 0 THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(least(pause, greatest(extract(epoch FROM deadline - clock_timestamp()), 0)));
        pause := least(pause * 2, 0.1);
    END LOOP;
END
$$;
