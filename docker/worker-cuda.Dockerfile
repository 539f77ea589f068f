# syntax=docker/dockerfile:1
# autoembed worker on NVIDIA GPUs: one Celery worker process per visible GPU
# (pool process i uses cuda:i), fp16.
#
#   docker build -f docker/worker-cuda.Dockerfile -t autoembed-worker-cuda .
#   docker run --rm --gpus all -e AUTOEMBED_DATABASE_URL=... -e AUTOEMBED_BROKER_URL=... \
#       autoembed-worker-cuda
#
# `autoembed worker` starts one process per GPU by default (--concurrency
# defaults to the number of visible GPUs); pass --concurrency N to override.
#
# CUDA_IMAGE and TORCH_INDEX go together: the torch wheel brings its own CUDA
# libraries (cuXYZ in the index name), and the host driver must support that
# CUDA version. Check https://pytorch.org/get-started/locally/ for the cuXYZ
# builds published for TORCH_VERSION.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# PYTORCH_NVML_BASED_CUDA_CHECK: the worker's parent process counts GPUs
# before forking its pool; asking NVML means it never initializes CUDA, which
# a forked child could not use.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive \
    PYTORCH_NVML_BASED_CUDA_CHECK=1

# Ubuntu 24.04's Python is 3.12 (autoembed needs 3.11+), in a venv (PEP 668).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY worker ./worker
COPY migrations ./migrations
COPY extension_sql ./extension_sql
RUN pip install ".[model]" && cd / && rm -rf /src

RUN useradd --create-home --uid 10001 autoembed
USER autoembed
WORKDIR /home/autoembed
ENV HF_HOME=/home/autoembed/.cache/huggingface

ENTRYPOINT ["autoembed"]
CMD ["worker"]
