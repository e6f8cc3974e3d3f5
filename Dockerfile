# syntax=docker/dockerfile:1
# tritonctl's server on CPU (onnxruntime, CPU-only torch). The CUDA image is Dockerfile.pytorch.
#   docker build -t tritonctl .
#   docker run -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$(pwd)/model_repo:/models" tritonctl \
#     tritonserver --model-repository=/models
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# PyPI's Linux torch wheel carries CUDA (gigabytes this image never uses); this index has the CPU build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY . .
RUN /opt/venv/bin/pip install ".[onnx,torch]"

FROM ${PYTHON_IMAGE}
# tini as process 1: forwards SIGTERM to the server and reaps orphaned worker processes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 triton \
 && useradd --system --uid 10001 --gid triton --create-home --home-dir /home/triton triton \
 && mkdir /models \
 && chown triton:triton /models
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/tritonserver /usr/local/bin/tritonserver
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/tritonserver-healthcheck
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric, so Kubernetes can enforce runAsNonRoot (tritonctl deploy sets the same id).
USER 10001:10001
WORKDIR /home/triton
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=6s --start-period=120s --retries=3 CMD ["tritonserver-healthcheck"]
ENTRYPOINT ["tini", "--"]
CMD ["tritonserver", "--model-repository=/models"]
