-- Rows like a given row ("more like this", related items, near duplicates):
-- a semantic search whose query is the row's own stored vectors.
--
-- The row's chunks are combined into one query vector, their mean (the
-- centroid; a one-chunk row is its own vector), taken in the version
-- searched. The row itself never comes back; ranks start at 1. Filters,
-- chunks, version, predicate, skip and min_score mean what they mean for
-- autoembed.search (060_search.sql), and the
-- caller's privileges and row-level security apply the same way: a row the
-- caller cannot see is reported as missing, never used as a query.

-- A key given as JSON, as the source types it: every key column, nothing
-- else; a scalar stands for a one-column key.
CREATE OR REPLACE FUNCTION autoembed._typed_key(v autoembed.vectorizer, key jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typed jsonb;
    expected text := array_to_string(v.pk_columns, ', ');
BEGIN
    IF key IS NULL OR jsonb_typeof(key) = 'null' THEN
        RAISE EXCEPTION 'autoembed: key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(key) <> 'object' THEN
        IF cardinality(v.pk_columns) > 1 THEN
            RAISE EXCEPTION 'autoembed: vectorizer "%" has a key of % columns (%): give them as a JSON object', v.name,
                cardinality(v.pk_columns), expected
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('e.g. %L', (SELECT jsonb_object_agg(c, '...') FROM unnest(v.pk_columns) AS c));
        END IF;
        key := jsonb_build_object(v.pk_columns[1], key);
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(key) AS j WHERE j <> ALL (v.pk_columns))
       OR EXISTS (SELECT 1 FROM unnest(v.pk_columns) AS c WHERE NOT key ? c OR key -> c = 'null') THEN
        RAISE EXCEPTION 'autoembed: the key of vectorizer "%" is (%), got %', v.name, expected, key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        EXECUTE format('SELECT %s FROM jsonb_to_record($1) AS k(%s)',
                       autoembed._pk_json(v, 'k'), autoembed._pk_fragment(v, '%1$I %2$s'))
            INTO typed USING key;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'autoembed: % is not a key of vectorizer "%": %', key, v.name, SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Its key columns are typed %s.',
                                autoembed._pk_fragment(v, '%1$I %2$s'));
    END;
    RETURN typed;
END
$$;

-- Signatures before predicate, skip and min_score.
DROP FUNCTION IF EXISTS autoembed.similar(text, jsonb, int, jsonb, boolean, text);
DROP FUNCTION IF EXISTS autoembed.similar(text, anyelement, int, jsonb, boolean, text);
DROP FUNCTION IF EXISTS autoembed.similar(text, text, int, jsonb, boolean, text);

CREATE OR REPLACE FUNCTION autoembed.similar(
    name text, key jsonb, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, chunks boolean DEFAULT false, version text DEFAULT NULL,
    predicate text DEFAULT NULL, skip int DEFAULT 0, min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version := autoembed._version(v, version);
    typed jsonb;
    visible boolean;
    centroid @extschema:vector@.vector;
    own_chunks int;
BEGIN
    PERFORM autoembed._check_search_args(k, filter, chunks, skip);
    PERFORM autoembed._check_search_privilege(v, ver, 'semantic');
    PERFORM autoembed._check_predicate(v, predicate);
    typed := autoembed._typed_key(v, key);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s AS s, jsonb_to_record($1) AS k(%s) WHERE %s)',
                   v.source, autoembed._pk_fragment(v, '%1$I %2$s'), autoembed._pk_join(v, 's', 'k'))
        INTO visible USING typed;
    IF NOT visible THEN
        RAISE EXCEPTION 'autoembed: % has no row % (or you may not see it)', v.source, typed
            USING ERRCODE = 'no_data_found';
    END IF;
    IF ver.model_version_id IS NOT NULL THEN
        EXECUTE format('SELECT @extschema:vector@.avg(e.embedding::@extschema:vector@.vector), count(*) FROM autoembed.%I AS e, '
                       'jsonb_to_record($1) AS k(%s) WHERE %s AND e.model_version_id = $2',
                       ver.embeddings_table, autoembed._pk_fragment(v, '%1$I %2$s'),
                       autoembed._pk_join(v, 'e', 'k'))
            INTO centroid, own_chunks USING typed, ver.model_version_id;
    END IF;
    IF centroid IS NULL THEN
        RAISE EXCEPTION 'autoembed: row % of vectorizer "%" is not embedded yet in version % (%)',
            typed, v.name, ver.ordinal, ver.model
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A worker embeds it shortly after it changes: SELECT * FROM autoembed.vectorizer_status; '
                         'a row whose text is empty has no vectors.';
    END IF;
    IF k = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT s.pk, s.chunk_no, s.chunk, s.score, s.new_rank
        FROM (SELECT h.pk, h.chunk_no, h.chunk, h.score, row_number() OVER (ORDER BY h.rank) AS new_rank
              FROM autoembed.search(name, centroid,
                                    least(k + skip + CASE WHEN chunks THEN own_chunks ELSE 1 END, 10000),
                                    filter, chunks, ver.ordinal::text, predicate, 0, min_score) AS h
              WHERE h.pk <> typed) AS s
        ORDER BY s.new_rank
        OFFSET skip LIMIT k;
END
$$;

-- A one-column key given as itself: autoembed.similar('tickets', 42).
CREATE OR REPLACE FUNCTION autoembed.similar(
    name text, key anyelement, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, chunks boolean DEFAULT false, version text DEFAULT NULL,
    predicate text DEFAULT NULL, skip int DEFAULT 0, min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE sql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM autoembed.similar(name, to_jsonb(key), k, filter, chunks, version, predicate, skip, min_score)
$$;

-- A key typed as text, or an untyped literal: a JSON object is the key
-- object ('{"sku": "s1", "lang": "en"}'), anything else the value of a
-- one-column key ('s1', '42').
CREATE OR REPLACE FUNCTION autoembed.similar(
    name text, key text, k int DEFAULT 10,
    filter jsonb DEFAULT NULL, chunks boolean DEFAULT false, version text DEFAULT NULL,
    predicate text DEFAULT NULL, skip int DEFAULT 0, min_score double precision DEFAULT NULL)
RETURNS TABLE (pk jsonb, chunk_no int, chunk text, score double precision, rank bigint)
LANGUAGE sql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM autoembed.similar(
        name, CASE WHEN ltrim(key) LIKE '{%' THEN key::jsonb ELSE to_jsonb(key) END,
        k, filter, chunks, version, predicate, skip, min_score)
$$;
