# SSAH Audit: one image for the API, the workers and the migration.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HOME=/cache/huggingface SSAH_ARTIFACT_DIR=/data/artifacts
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, in its own layer: the CUDA build (the wheel brings its CUDA runtime; the host needs
# only the NVIDIA driver and container toolkit). TORCH_INDEX=https://download.pytorch.org/whl/cpu for CPU-only.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4"
COPY pyproject.toml README.md alembic.ini ./
COPY ssah ./ssah
COPY ssah_engine ./ssah_engine
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip install -e ".[service]" && useradd --create-home ssah && mkdir -p /data/artifacts /cache \
    && chown -R ssah /data /cache
USER ssah
EXPOSE 8000
CMD ["ssah", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-embedded"]
