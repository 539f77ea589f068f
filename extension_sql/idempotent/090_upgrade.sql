-- Bring vectorizers made by an older autoembed up to this one's objects (run
-- by every install; does nothing when they are current).
--
-- Source readers (030_ddl.sql, _create_source_function): vectorizers created
-- before them get one, owned like their trigger functions by the role that
-- created the vectorizer, and granted to the worker roles.
DO $upgrade$
DECLARE
    v autoembed.vectorizer;
    creator regrole;
BEGIN
    FOR v IN SELECT * FROM autoembed.vectorizer ORDER BY id LOOP
        CONTINUE WHEN pg_catalog.to_regprocedure(
            pg_catalog.format('autoembed.%I(jsonb, boolean)', autoembed._source_function(v))) IS NOT NULL;
        SELECT p.proowner::regrole INTO creator
        FROM pg_catalog.pg_proc AS p
        WHERE p.oid = pg_catalog.to_regprocedure(pg_catalog.format('autoembed.%I()', v.sync_function));
        PERFORM autoembed._create_source_function(v);
        IF creator IS NOT NULL AND creator <> current_user::regrole THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION autoembed.%I(jsonb, boolean) OWNER TO %I',
                                      autoembed._source_function(v), creator);
        END IF;
        PERFORM autoembed._grant_worker_objects(v, r.role) FROM autoembed._worker_roles() AS r;
        RAISE NOTICE 'autoembed: vectorizer "%" got its source reader', v.name;
    END LOOP;
END
$upgrade$;
