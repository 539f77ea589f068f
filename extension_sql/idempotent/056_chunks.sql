-- Writing and forgetting chunks: the embeddings rows and, with them, their
-- BM25 statistics, always together, in the caller's transaction; a written
-- chunk joins the BM25 index's fresh list (064_bm25_index.sql), a deleted
-- one's postings are dropped when its segment is merged.
--
-- Statistics are kept as deltas (rows added, never updated), so concurrent
-- writers never wait on a shared counter row; a reader's sums are exact for
-- its snapshot. autoembed.compact_stats() folds the deltas now and then.

-- Delete the chunks of the given keys (a JSON array of key objects): in one
-- version, or in every version of the vectorizer when version_id is NULL.
CREATE OR REPLACE FUNCTION autoembed._delete_chunks(vectorizer_id int, version_id int, keys jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v autoembed.vectorizer;
    ver autoembed.vectorizer_version;
BEGIN
    IF keys IS NULL OR jsonb_array_length(keys) = 0 THEN
        RETURN;
    END IF;
    v := autoembed._vectorizer_by_id(vectorizer_id);
    FOR ver IN SELECT * FROM autoembed.vectorizer_version AS x
               WHERE x.vectorizer_id = v.id AND (version_id IS NULL OR x.id = version_id)
               ORDER BY x.ordinal
               -- drop_version deletes the row before its tables: it waits for
               -- this transaction, or this one skips the version it dropped
               FOR KEY SHARE LOOP
        EXECUTE format($q$
            WITH gone AS (
                DELETE FROM autoembed.%1$I AS e
                USING jsonb_to_recordset($1) AS k(%2$s)
                WHERE %3$s
                RETURNING e.chunk_id, e.model_version_id, e.lexemes, e.doc_len
            ), terms AS (
                INSERT INTO autoembed.%5$I (model_version_id, term, docs, length)
                SELECT g.model_version_id, l.lexeme, -count(*), 0
                FROM gone AS g CROSS JOIN LATERAL unnest(g.lexemes) AS l
                GROUP BY g.model_version_id, l.lexeme
            )
            INSERT INTO autoembed.%5$I (model_version_id, term, docs, length)
            SELECT g.model_version_id, '', -count(*), -sum(g.doc_len)
            FROM gone AS g GROUP BY g.model_version_id
            $q$,
            ver.embeddings_table, autoembed._pk_fragment(v, '%1$I %2$s'),
            autoembed._pk_join(v, 'e', 'k'), NULL, ver.stats_table)
            USING keys;
    END LOOP;
END
$$;

-- Insert the chunks of a completed claim of version ver, embedded by model
-- version model_version_id, for the rows in `keys` (a JSON array of key
-- objects); chunk_item indexes into `items`. Each chunk's lexemes (its text
-- search configuration's to_tsvector) are BM25's forward index.
CREATE OR REPLACE FUNCTION autoembed._insert_chunks(
    v autoembed.vectorizer, ver autoembed.vectorizer_version, model_version_id int, keys jsonb, items jsonb,
    chunk_item int[], chunk_no int[], chunk text[], embedding @extschema:vector@.vector[])
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format($q$
        WITH incoming AS (
            SELECT %2$s, c.chunk_no, c.chunk, c.embedding, q.claimed_seq,
                   to_tsvector(%3$L::regconfig, c.chunk) AS lexemes
            FROM unnest($3, $4, $5, $6) AS c(item, chunk_no, chunk, embedding)
            -- only the keys given (a join: a containment test per chunk
            -- would be quadratic in the batch)
            JOIN (SELECT DISTINCT w.key FROM jsonb_array_elements($1) AS w(key)) AS w ON w.key = $7 -> c.item
            CROSS JOIN LATERAL jsonb_to_record($7 -> c.item) AS k(%4$s)
            JOIN autoembed.%5$I AS q ON %6$s
        ), new AS (
            INSERT INTO autoembed.%1$I
                (%7$s, model_version_id, chunk_no, chunk, embedding, lexemes, doc_len, source_seq)
            SELECT %8$s, $2, i.chunk_no, i.chunk, i.embedding, i.lexemes,
                   (SELECT coalesce(sum(cardinality(l.positions)), 0) FROM unnest(i.lexemes) AS l),
                   i.claimed_seq
            FROM incoming AS i
            RETURNING chunk_id, model_version_id, lexemes, doc_len
        ), fresh AS (
            -- searchable at once; merged into the index later (064_bm25_index.sql)
            INSERT INTO autoembed.%9$I (model_version_id, term, segment, max_impact, chunk_ids, impacts)
            SELECT $2, '', 0, 0, array_agg(n.chunk_id), '{}' FROM new AS n HAVING count(*) > 0
        ), terms AS (
            INSERT INTO autoembed.%10$I (model_version_id, term, docs, length)
            SELECT n.model_version_id, l.lexeme, count(*), 0
            FROM new AS n CROSS JOIN LATERAL unnest(n.lexemes) AS l
            GROUP BY n.model_version_id, l.lexeme
        )
        INSERT INTO autoembed.%10$I (model_version_id, term, docs, length)
        SELECT n.model_version_id, '', count(*), sum(n.doc_len) FROM new AS n GROUP BY n.model_version_id
        $q$,
        ver.embeddings_table,                            -- 1
        autoembed._pk_fragment(v, 'k.%1$I'),             -- 2
        v.ts_config,                                     -- 3
        autoembed._pk_fragment(v, '%1$I %2$s'),          -- 4
        ver.queue_table,                                 -- 5
        autoembed._pk_join(v, 'q', 'k'),                 -- 6
        autoembed._pk_fragment(v, '%1$I'),               -- 7
        autoembed._pk_fragment(v, 'i.%1$I'),             -- 8
        ver.postings_table,                              -- 9
        ver.stats_table)                                 -- 10
        USING keys, model_version_id, chunk_item, chunk_no, chunk, embedding, items;
END
$$;
