-- Rows that failed: what they are and why, in every version of a vectorizer
-- (or in one: a number, model or tag). vectorizer_status counts the active
-- version's (and shows the latest error), vectorizer_versions each version's;
-- this lists them all, oldest failure first. autoembed.retry_failed(name)
-- (040_vectorizer.sql) requeues them.
CREATE OR REPLACE FUNCTION autoembed.failed_rows(name text, version text DEFAULT NULL)
RETURNS TABLE (pk jsonb, attempts int, failed_at timestamptz, error text, version_no int)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version;
BEGIN
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x
               WHERE x.vectorizer_id = v.id
                 AND (failed_rows.version IS NULL OR x.id = (autoembed._version(v, failed_rows.version)).id)
               ORDER BY x.ordinal LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %s, q.attempts, q.failed_at, q.last_error, $1 FROM autoembed.%I AS q '
            'WHERE q.failed_at IS NOT NULL ORDER BY q.failed_at, 1',
            autoembed._pk_json(v, 'q'), ver.queue_table)
            USING ver.ordinal;
    END LOOP;
END
$$;
