-- autoembed catalog: run once, by migration 0001.
--
-- Everything autoembed knows lives in these three tables. The per-vectorizer
-- tables (inbox, queue, embeddings) are created by autoembed.create_vectorizer()
-- and recorded in autoembed.vectorizer.

-- Models that create_vectorizer() can use without being told their dimensions.
CREATE TABLE autoembed.model (
    name            text PRIMARY KEY,
    dimensions      int  NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    max_seq_length  int  NOT NULL CHECK (max_seq_length > 0),
    description     text
);

-- One row per exact model version a worker has embedded with: the model's
-- name, a digest of its weights, and everything else that changes the numbers.
CREATE TABLE autoembed.model_version (
    id              int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model           text    NOT NULL,
    weights_digest  text    NOT NULL,
    dimensions      int     NOT NULL CHECK (dimensions > 0),
    pooling         text    NOT NULL,
    normalized      boolean NOT NULL,
    dtype           text    NOT NULL,
    max_seq_length  int     NOT NULL CHECK (max_seq_length > 0),
    tag             text    NOT NULL UNIQUE,
    registered_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE autoembed.vectorizer (
    id                 int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text     NOT NULL UNIQUE CHECK (name <> ''),
    source             regclass NOT NULL,
    columns            text[]   NOT NULL CHECK (cardinality(columns) > 0),
    pk_columns         text[]   NOT NULL CHECK (cardinality(pk_columns) > 0),
    pk_types           text[]   NOT NULL,
    model              text     NOT NULL,
    dimensions         int      NOT NULL CHECK (dimensions > 0),
    chunk_tokens       int      CHECK (chunk_tokens > 0),   -- NULL: the model's maximum
    chunk_overlap      int      NOT NULL CHECK (chunk_overlap >= 0),
    ts_config          text     NOT NULL,
    bm25_k1            float8   NOT NULL CHECK (bm25_k1 >= 0),
    bm25_b             float8   NOT NULL CHECK (bm25_b BETWEEN 0 AND 1),
    bm25_ref_avgdl     float8   NOT NULL DEFAULT 100 CHECK (bm25_ref_avgdl > 0),  -- avgdl the impacts assume
    distance           text     NOT NULL CHECK (distance IN ('cosine', 'l2', 'inner_product')),
    index_method       text     NOT NULL CHECK (index_method IN ('hnsw', 'none')),
    max_attempts       int      NOT NULL CHECK (max_attempts > 0),
    retry_delay        interval NOT NULL,
    inbox_table        name     NOT NULL,
    queue_table        name     NOT NULL,
    embeddings_table   name     NOT NULL,
    postings_table     name     NOT NULL,
    stats_table        name     NOT NULL,
    sync_function      name     NOT NULL,
    active_version_id  int      REFERENCES autoembed.model_version (id),
    paused             boolean  NOT NULL DEFAULT false,
    last_error         text,
    last_error_at      timestamptz,
    last_claim_at      timestamptz,
    drains_started     bigint   NOT NULL DEFAULT 0,   -- drain tasks started by a dispatcher's signal
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Text queries from SQL (see extension_sql/idempotent/067_query_embedding.sql).
-- Recent query embeddings, per model version: a query is embedded by exactly
-- the model version of the stored vectors. The text is kept and compared on
-- lookup, so a digest collision can never return another query's vector.
-- Written only by workers, read only through SECURITY DEFINER functions that
-- need the exact text: no role can list other users' queries.
CREATE TABLE autoembed.query_cache (
    model_version_id  int   NOT NULL REFERENCES autoembed.model_version (id) ON DELETE CASCADE,
    query_digest      bytea NOT NULL,   -- autoembed._query_digest(query)
    query             text  NOT NULL,
    embedding         @extschema:vector@.vector NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_used_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version_id, query_digest)
);

-- Queries waiting for a worker to embed them. A worker claims them with
-- FOR UPDATE SKIP LOCKED, answers into query_cache and deletes them in one
-- transaction; one it cannot embed gets an error the asking session reports.
CREATE TABLE autoembed.query_request (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id  int   NOT NULL REFERENCES autoembed.model_version (id) ON DELETE CASCADE,
    query             text  NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    error             text
);
