-- Rows that failed: what they are and why. vectorizer_status counts them
-- (and shows the latest error); this lists them all, oldest failure first.
-- autoembed.retry_failed(name) (040_vectorizer.sql) requeues them.
CREATE OR REPLACE FUNCTION autoembed.failed_rows(name text)
RETURNS TABLE (pk jsonb, attempts int, failed_at timestamptz, error text)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT %s, q.attempts, q.failed_at, q.last_error FROM autoembed.%I AS q '
        'WHERE q.failed_at IS NOT NULL ORDER BY q.failed_at, 1',
        autoembed._pk_json(v, 'q'), v.queue_table);
END
$$;
