# syntax=docker/dockerfile:1
# PostgreSQL + pgvector + the autoembed extension files.
#
#   docker build -f docker/postgres.Dockerfile -t autoembed-postgres .
#
# Then either `autoembed install --db URL` (Alembic; what docker/compose.yaml
# does) or, in psql, CREATE EXTENSION autoembed CASCADE. Use one or the other
# in a given database, not both.
#
# PG_IMAGE: pgvector's official image. pg18 matches the PostgreSQL the test
# suite runs on; pg17/pg16 work too (CREATE EXTENSION needs 16+). Note that
# from PostgreSQL 18 on the image keeps its data under /var/lib/postgresql
# (PGDATA=/var/lib/postgresql/18/docker); for pg17 and older mount the volume
# at /var/lib/postgresql/data instead.
ARG PG_IMAGE=pgvector/pgvector:pg18

# Builder: make autoembed.control and autoembed--<version>.sql from the same
# SQL files `autoembed install` runs.
FROM python:3.11-slim AS extension-files
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY worker ./worker
COPY migrations ./migrations
COPY extension_sql ./extension_sql
RUN pip install . && autoembed extension-files --out /out

FROM ${PG_IMAGE}
COPY --from=extension-files /out/ /tmp/autoembed-extension/
# PG_MAJOR is set by the postgres base image.
RUN set -eux; \
    dir="/usr/share/postgresql/${PG_MAJOR}/extension"; \
    test -f "$dir/vector.control"; \
    install -m 0644 /tmp/autoembed-extension/* "$dir/"; \
    rm -rf /tmp/autoembed-extension
