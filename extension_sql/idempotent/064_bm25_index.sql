-- BM25's inverted index: posting blocks in segments, merged in the
-- background, off the embedding transaction (065_bm25.sql searches it).
--
-- A version's chunks already hold their lexemes (embeddings.lexemes, the
-- text search configuration's to_tsvector) and lengths (doc_len): that is
-- the forward index, and every exact score is computed from it. The
-- postings table is the inverted index, one row per block:
--
--   (term, segment, max_impact, chunk_ids[], impacts[])
--
-- up to 128 postings of one term in one segment, in falling impact order
-- (impact = tf / (tf + k1 * (1 - b + b * dl / A)) for the vectorizer's k1, b
-- and the version's reference average length A, bm25_ref_avgdl), so a
-- search reads each term's best postings first and the bounds MaxScore needs.
--
-- Writing a chunk (056_chunks.sql) adds one row per batch to the fresh list:
-- term '' and segment 0, the batch's chunk ids. A fresh chunk is searchable
-- at once (searches score every fresh chunk holding a query term from its
-- lexemes). Merging (merge_bm25, called by workers as they drain) turns the
-- fresh list into a segment of blocks in one transaction, so a search sees
-- a chunk either fresh or merged, never both, never neither; segments of a
-- level are merged into one of the next level once there are 8 of them
-- (tiered, like Lucene's), dropping the postings of chunks since deleted.
-- Deleting a chunk leaves its postings until then: searches skip them (an
-- exact score needs the chunk), and the term statistics (deltas written
-- with the chunks) are exact at once.
--
-- Storage: ~12 bytes a posting plus one row per term and segment, against
-- ~400 bytes a posting as one row per posting with three B-tree indexes.

CREATE OR REPLACE FUNCTION autoembed._create_bm25_tables(v autoembed.vectorizer, ver autoembed.vectorizer_version)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE autoembed.%I (model_version_id int NOT NULL, term text NOT NULL, '
        'segment int NOT NULL, max_impact float4 NOT NULL, '
        'chunk_ids bigint[] NOT NULL, impacts float4[] NOT NULL)',
        ver.postings_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (model_version_id, term, max_impact DESC)',
        autoembed._version_name(v.name, ver.ordinal, 'postings_impact'), ver.postings_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (segment)',
        autoembed._version_name(v.name, ver.ordinal, 'postings_segment'), ver.postings_table);
    EXECUTE format(
        'CREATE TABLE autoembed.%I (model_version_id int NOT NULL, term text NOT NULL, '
        'docs bigint NOT NULL, length bigint NOT NULL)',
        ver.stats_table);
    EXECUTE format('CREATE INDEX %I ON autoembed.%I (model_version_id, term)',
        autoembed._version_name(v.name, ver.ordinal, 'stats_term'), ver.stats_table);
    EXECUTE format('REVOKE ALL ON autoembed.%I, autoembed.%I FROM PUBLIC', ver.postings_table, ver.stats_table);
END
$$;

-- Whether the current role sees every row of a source table: SELECT on the
-- whole table and no row-level security applying to it. Only such a role may
-- read the posting blocks (080_grants.sql): a block lists the chunks of many
-- rows. Others search by scanning the chunks they may see (065_bm25.sql).
CREATE OR REPLACE FUNCTION autoembed._sees_whole_source(source oid)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((
        SELECT has_table_privilege(c.oid, 'SELECT')
               AND (NOT c.relrowsecurity
                    OR (NOT c.relforcerowsecurity AND pg_has_role(c.relowner, 'USAGE'))
                    OR r.rolbypassrls OR r.rolsuper)
        FROM pg_class AS c CROSS JOIN pg_roles AS r
        WHERE c.oid = source AND r.rolname = current_user), false)
$$;

-- SQL text: the impact of a posting for tf and dl given as SQL expressions
-- and k1, b and the reference average length as parameter numbers.
CREATE OR REPLACE FUNCTION autoembed._impact_expr(tf text, dl text, k1_param int, b_param int, ref_param int)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('(%1$s::float8 / (%1$s + $%3$s * (1 - $%4$s + $%4$s * %2$s / $%5$s)))::float4',
                  tf, dl, k1_param, b_param, ref_param)
$$;

-- SQL text: the CTE postings (term, chunk_id, impact) of the chunks (alias
-- e) that `chunks` (a FROM clause) yields, from their lexemes, for k1, b and
-- the reference average length in parameters $3, $4 and $5.
CREATE OR REPLACE FUNCTION autoembed._lexeme_postings(chunks text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$postings AS (
            SELECT l.lexeme AS term, e.chunk_id, %2$s AS impact
            FROM %1$s CROSS JOIN LATERAL unnest(e.lexemes) AS l
        )$q$, chunks, autoembed._impact_expr('cardinality(l.positions)', 'e.doc_len', 3, 4, 5))
$$;

-- SQL text: write postings (a relation of term, chunk_id, impact named in
-- `postings`, SQL over CTEs of the caller) as blocks of segment $1 of model
-- version $2, returning how many distinct chunks they cover.
CREATE OR REPLACE FUNCTION autoembed._write_blocks(ver autoembed.vectorizer_version)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        numbered AS (
            SELECT p.term, p.chunk_id, p.impact,
                   (row_number() OVER (PARTITION BY p.term ORDER BY p.impact DESC, p.chunk_id) - 1) / 128 AS block
            FROM postings AS p
        ), written AS (
            INSERT INTO autoembed.%1$I (model_version_id, term, segment, max_impact, chunk_ids, impacts)
            SELECT $2, n.term, $1, max(n.impact),
                   array_agg(n.chunk_id ORDER BY n.impact DESC, n.chunk_id),
                   array_agg(n.impact ORDER BY n.impact DESC, n.chunk_id)
            FROM numbered AS n GROUP BY n.term, n.block
            RETURNING 1)
        SELECT (SELECT count(DISTINCT p.chunk_id) FROM postings AS p), (SELECT count(*) FROM written)
        $q$, ver.postings_table)
$$;

-- The level of a segment of n chunks: 1 up to 8,000 chunks, then one more
-- for each 8 times as many.
CREATE OR REPLACE FUNCTION autoembed._segment_level(n bigint)
RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 1 + greatest(0, floor(ln(greatest(n, 1) / 1000.0) / ln(8)))::int
$$;

-- Segment numbers: level * 1,000,000 + a serial within the level (segment 0
-- is the fresh list). The next free one of a level, and a level's segments.
CREATE OR REPLACE FUNCTION autoembed._next_segment(ver autoembed.vectorizer_version, level int)
RETURNS int
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last int;
BEGIN
    EXECUTE format('SELECT max(p.segment) FROM autoembed.%I AS p WHERE p.segment >= $1 AND p.segment < $2',
                   ver.postings_table)
        INTO last USING level * 1000000, (level + 1) * 1000000;
    RETURN coalesce(last + 1, level * 1000000 + 1);
END
$$;

CREATE OR REPLACE FUNCTION autoembed._level_segments(ver autoembed.vectorizer_version, level int)
RETURNS int[]
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found int[];
BEGIN
    -- a loose index scan: one probe per segment, not one per block
    EXECUTE format($q$
        WITH RECURSIVE s AS (
            SELECT (SELECT min(p.segment) FROM autoembed.%1$I AS p WHERE p.segment >= $1 AND p.segment < $2) AS seg
            UNION ALL
            SELECT (SELECT min(p.segment) FROM autoembed.%1$I AS p WHERE p.segment > s.seg AND p.segment < $2)
            FROM s WHERE s.seg IS NOT NULL)
        SELECT coalesce(array_agg(s.seg), '{}') FROM s WHERE s.seg IS NOT NULL
        $q$, ver.postings_table)
        INTO found USING level * 1000000, (level + 1) * 1000000;
    RETURN found;
END
$$;

-- Turn a version's fresh list into a segment (when it lists at least
-- min_chunks chunks), then merge every level holding 8 segments. The caller
-- holds the vectorizer row (FOR SHARE or more): the impacts use its k1, b.
-- Returns the fresh chunks merged. One merger per version at a time; a
-- second returns 0 at once.
CREATE OR REPLACE FUNCTION autoembed._merge_bm25(v autoembed.vectorizer, ver autoembed.vectorizer_version, min_chunks int)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fresh bigint;
    chunks bigint;
    level int;
    segments int[];
    seg int;
BEGIN
    IF ver.model_version_id IS NULL
       OR NOT pg_try_advisory_xact_lock(hashtext('autoembed.merge_bm25'), ver.id) THEN
        RETURN 0;
    END IF;
    EXECUTE format($q$SELECT coalesce(sum(cardinality(p.chunk_ids)), 0) FROM autoembed.%I AS p
                      WHERE p.model_version_id = $1 AND p.term = ''$q$, ver.postings_table)
        INTO fresh USING ver.model_version_id;
    IF fresh = 0 OR fresh < min_chunks THEN
        RETURN 0;
    END IF;
    level := autoembed._segment_level(fresh);
    seg := autoembed._next_segment(ver, level);
    EXECUTE format($q$
        WITH taken AS (
            DELETE FROM autoembed.%1$I AS p WHERE p.model_version_id = $2 AND p.term = ''
            RETURNING p.chunk_ids
        ), %2$s, %3$s
        $q$, ver.postings_table,
        autoembed._lexeme_postings(format(
            '(SELECT DISTINCT u.chunk_id FROM taken AS t CROSS JOIN LATERAL unnest(t.chunk_ids) AS u(chunk_id)) AS t '
            'JOIN autoembed.%I AS e ON e.chunk_id = t.chunk_id', ver.embeddings_table)),
        autoembed._write_blocks(ver))
        INTO chunks USING seg, ver.model_version_id, v.bm25_k1, v.bm25_b, ver.bm25_ref_avgdl;
    LOOP
        segments := autoembed._level_segments(ver, level);
        EXIT WHEN cardinality(segments) < 8;
        level := level + 1;
        PERFORM autoembed._merge_segments(ver, segments, level);
    END LOOP;
    RETURN fresh;
END
$$;

-- Merge segments into one new segment of the given level, leaving out the postings of chunks deleted since. Impacts are kept
-- (the caller holds the vectorizer row, so k1 and b have not changed).
CREATE OR REPLACE FUNCTION autoembed._merge_segments(ver autoembed.vectorizer_version, segments int[], level int)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    seg int := autoembed._next_segment(ver, level);
    chunks bigint;
BEGIN
    EXECUTE format($q$
        WITH old AS (
            DELETE FROM autoembed.%1$I AS p WHERE p.segment = ANY ($3)
            RETURNING p.term, p.chunk_ids, p.impacts
        ), unpacked AS (
            SELECT o.term, u.chunk_id, u.impact
            FROM old AS o CROSS JOIN LATERAL unnest(o.chunk_ids, o.impacts) AS u(chunk_id, impact)
        ), postings AS (
            SELECT u.* FROM unpacked AS u WHERE u.chunk_id IN (SELECT e.chunk_id FROM autoembed.%2$I AS e)
        ), %3$s
        $q$, ver.postings_table, ver.embeddings_table, autoembed._write_blocks(ver))
        INTO chunks USING seg, ver.model_version_id, segments;
    RETURN chunks;
END
$$;

-- Rebuild a version's whole index from its chunks, as one segment, for the
-- vectorizer's k1, b and the average chunk length now (after set_bm25, or
-- when the average length has drifted far from the one the impacts assume).
-- The caller holds the vectorizer row FOR UPDATE. (assumed_avgdl: impacts
-- for another average length, as after the collection's chunks grew or
-- shrank; the tests make that state with it.)
CREATE OR REPLACE FUNCTION autoembed._rebuild_bm25(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, assumed_avgdl float8 DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    avgdl float8;
    chunks bigint;
BEGIN
    SELECT * INTO ver FROM autoembed.vectorizer_version AS x WHERE x.id = ver.id;
    avgdl := greatest(coalesce(assumed_avgdl, autoembed._avgdl(ver), ver.bm25_ref_avgdl, 100), 1);
    EXECUTE format('DELETE FROM autoembed.%I', ver.postings_table);
    IF ver.model_version_id IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM autoembed.%I', ver.embeddings_table) INTO chunks;
        EXECUTE format($q$
            WITH %1$s, %2$s
            $q$, autoembed._lexeme_postings(format('autoembed.%I AS e', ver.embeddings_table)),
            autoembed._write_blocks(ver))
            INTO chunks
            USING autoembed._next_segment(ver, autoembed._segment_level(chunks)), ver.model_version_id,
                  v.bm25_k1, v.bm25_b, avgdl;
    END IF;
    UPDATE autoembed.vectorizer_version AS x SET bm25_ref_avgdl = avgdl WHERE x.id = ver.id;
END
$$;

-- Merge the fresh chunks of a vectorizer's versions into the index when
-- there are at least min_chunks of them (workers call this as they drain;
-- searches are exact either way, faster with fewer fresh chunks). Returns
-- the chunks merged; 0 when another session is merging.
CREATE OR REPLACE FUNCTION autoembed.merge_bm25(name text, min_chunks int DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
    ver autoembed.vectorizer_version;
    merged bigint := 0;
BEGIN
    IF min_chunks IS NULL OR min_chunks < 1 THEN
        RAISE EXCEPTION 'autoembed: min_chunks must be at least 1, got %', coalesce(min_chunks::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- set_bm25 and rebuilds take it FOR UPDATE before rewriting impacts
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR SHARE;
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x WHERE x.vectorizer_id = v.id ORDER BY x.ordinal LOOP
        merged := merged + autoembed._merge_bm25(v, ver, min_chunks);
    END LOOP;
    RETURN merged;
END
$$;

-- Rewrite a vectorizer's whole index (every version) as one segment per
-- version: drops every deleted chunk's postings, and recomputes the impacts
-- for the average chunk length now. Searches are exact either way.
CREATE OR REPLACE FUNCTION autoembed.optimize_bm25(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer := autoembed._vectorizer(name);
BEGIN
    SELECT * INTO v FROM autoembed.vectorizer AS x WHERE x.id = v.id FOR UPDATE;
    PERFORM autoembed._rebuild_bm25(v, ver)
    FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
END
$$;
