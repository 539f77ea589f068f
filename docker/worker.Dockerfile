# syntax=docker/dockerfile:1
# autoembed on CPU: the worker, and every other command (install,
# dispatcher, status, search; Flower via `celery`).
#
#   docker build -f docker/worker.Dockerfile -t autoembed-worker .
#   docker run --rm -e AUTOEMBED_DATABASE_URL=... -e AUTOEMBED_BROKER_URL=... autoembed-worker
#
# The default command is `autoembed worker`; pass another subcommand to run
# that instead (e.g. `... autoembed-worker install`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU build of torch first, from PyTorch's CPU index: a bare torch
# requirement would pull the multi-GB CUDA build. Its own layer, so code
# changes do not download it again.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

# Flower (Celery's monitoring UI) for the compose stack's `flower` service;
# small, and nothing in autoembed imports it.
ARG FLOWER_VERSION=">=2.0,<3"
RUN pip install "flower${FLOWER_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY worker ./worker
COPY migrations ./migrations
COPY extension_sql ./extension_sql
# torch is already installed, so the model extra does not pull another one.
RUN pip install ".[model]" && cd / && rm -rf /src

RUN useradd --create-home --uid 10001 autoembed
USER autoembed
WORKDIR /home/autoembed
# Hub models are cached here; mount a volume to download them once.
ENV HF_HOME=/home/autoembed/.cache/huggingface

ENTRYPOINT ["autoembed"]
CMD ["worker"]
