-- Names and SQL fragments for per-vectorizer objects.
--
-- User-given names reach SQL only through format('%I') here; every derived
-- object name is built whole, checked against the 63-byte limit, and quoted once.

-- base || suffix, or, when that exceeds 63 bytes, a shortened base plus an
-- 8-hex-digit hash of the full base so distinct bases keep distinct names.
CREATE OR REPLACE FUNCTION autoembed._derived_name(base text, suffix text)
RETURNS name
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tag  text := '_' || left(md5(base), 8);
    stem text := base;
BEGIN
    IF octet_length(base || suffix) <= 63 THEN
        RETURN (base || suffix)::name;
    END IF;
    WHILE octet_length(stem || tag || suffix) > 63 LOOP
        stem := left(stem, -1);    -- drop whole characters, never half of one
    END LOOP;
    RETURN (stem || tag || suffix)::name;
END
$$;

-- format(fmt, col) for each key column, joined by sep. fmt may use %1$I for
-- the column name and %2$s for its type.
CREATE OR REPLACE FUNCTION autoembed._pk_fragment(v autoembed.vectorizer, fmt text, sep text DEFAULT ', ')
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format(fmt, c.col, c.typ), sep ORDER BY c.ord)
    FROM unnest(v.pk_columns, v.pk_types) WITH ORDINALITY AS c(col, typ, ord)
$$;

-- jsonb_build_object('k1', alias.k1, ...): a source row's key as jsonb.
CREATE OR REPLACE FUNCTION autoembed._pk_json(v autoembed.vectorizer, alias text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'pg_catalog.jsonb_build_object('
        || string_agg(format('%L, %I.%I', c.col, alias, c.col), ', ' ORDER BY c.ord)
        || ')'
    FROM unnest(v.pk_columns) WITH ORDINALITY AS c(col, ord)
$$;

-- a.k1 = b.k1 AND a.k2 = b.k2
CREATE OR REPLACE FUNCTION autoembed._pk_join(v autoembed.vectorizer, a text, b text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%1$I.%3$I = %2$I.%3$I', a, b, c.col), ' AND ' ORDER BY c.ord)
    FROM unnest(v.pk_columns) WITH ORDINALITY AS c(col, ord)
$$;

-- The text a row is embedded from: its embedded columns joined by blank
-- lines, NULLs skipped; NULL when every column is NULL (or the row is gone).
CREATE OR REPLACE FUNCTION autoembed._document_expr(v autoembed.vectorizer, alias text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CASE WHEN pg_catalog.num_nonnulls(%1$s) = 0 THEN NULL '
                  'ELSE pg_catalog.concat_ws(E''\n\n'', %1$s) END',
                  string_agg(format('%I.%I::text', alias, c.col), ', ' ORDER BY c.ord))
    FROM unnest(v.columns) WITH ORDINALITY AS c(col, ord)
$$;

-- The name of a version's object: <vectorizer>_<kind>_v<ordinal>, e.g.
-- docs_embeddings_v2 (shortened and hashed like every derived name). Ending
-- in the version keeps them apart from every other vectorizer's objects.
CREATE OR REPLACE FUNCTION autoembed._version_name(vectorizer_name text, ordinal int, kind text)
RETURNS name
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT autoembed._derived_name(vectorizer_name, format('_%s_v%s', kind, ordinal))
$$;
