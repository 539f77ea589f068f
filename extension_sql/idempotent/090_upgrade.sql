-- Bring every vectorizer up to this release's generated objects (run by
-- every install; an upgrade gives what a fresh create_vectorizer gives):
-- its sync trigger functions and triggers, source reader and view of the active version
-- are made anew from the catalog, owned (like the originals) by the role
-- that created the vectorizer; every version gets its row-level security,
-- term statistics function and policies (080_grants.sql: _secure_version)
-- and its queue's index (035_version_tables.sql: _index_queue);
-- and every worker role gets what this release's workers need (new catalog
-- columns, views made anew).
DO $upgrade$
DECLARE
    v autoembed.vectorizer;
    creator regrole;
    had_reader boolean;
    worker regrole;
    searcher oid;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer ORDER BY id LOOP
        SELECT p.proowner::regrole INTO creator
        FROM pg_catalog.pg_proc AS p
        WHERE p.oid = pg_catalog.to_regprocedure(pg_catalog.format('autoembed.%I()', v.sync_function));
        had_reader := pg_catalog.to_regprocedure(
            pg_catalog.format('autoembed.%I(jsonb, boolean)', autoembed._source_function(v))) IS NOT NULL;
        BEGIN
            PERFORM autoembed._render_vectorizer(v);
            IF pg_catalog.to_regclass('autoembed._searchers_0_1_0') IS NOT NULL THEN
                FOR searcher IN
                    EXECUTE 'SELECT grantee FROM autoembed._searchers_0_1_0 WHERE vectorizer_id = $1'
                    USING v.id
                LOOP
                    EXECUTE pg_catalog.format('GRANT SELECT ON autoembed.%I TO %s', v.embeddings_table,
                        CASE WHEN searcher = 0 THEN 'PUBLIC' ELSE searcher::regrole::text END);
                END LOOP;
            END IF;
            PERFORM autoembed._secure_version(v, ver), autoembed._index_queue(v, ver)
            FROM autoembed.vectorizer_version AS ver WHERE ver.vectorizer_id = v.id;
            IF creator IS NOT NULL AND creator <> current_user::regrole THEN
                EXECUTE pg_catalog.format('ALTER FUNCTION autoembed.%I(jsonb, boolean) OWNER TO %I',
                                          autoembed._source_function(v), creator);
                EXECUTE pg_catalog.format('ALTER VIEW autoembed.%I OWNER TO %I', v.embeddings_table, creator);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'autoembed: cannot bring vectorizer "%" up to this release: its objects belong to role %, which % is not a member of',
                v.name, creator, current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = pg_catalog.format('Run autoembed install as %s (or a superuser).', creator);
        END;
        -- BM25 chunks left fresh by an upgrade (0005_bm25_blocks.sql) go into the index
        PERFORM autoembed.merge_bm25(v.name, 1000);
        IF NOT had_reader THEN
            PERFORM autoembed._grant_worker_objects(v, r.role) FROM autoembed._worker_roles() AS r;
            RAISE NOTICE 'autoembed: vectorizer "%" got its source reader', v.name;
        END IF;
    END LOOP;
    DROP TABLE IF EXISTS autoembed._searchers_0_1_0;
    FOR worker IN SELECT r.role FROM autoembed._worker_roles() AS r LOOP
        PERFORM autoembed.grant_worker(worker);
    END LOOP;
END
$upgrade$;
