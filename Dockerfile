# textclf: text-classification REST service (FastAPI + PyTorch LSTM).
#
# Needs BuildKit (Docker >= 20.10 with DOCKER_BUILDKIT=1, or `docker buildx build`).
# No `# syntax=` line on purpose: the builtin Dockerfile frontend already
# supports RUN --mount, and a syntax line would pull an image at build time.
#
# CPU image (default: torch from the PyTorch CPU index):
#   docker build -t textclf:latest .
# Behind a TLS-intercepting proxy, hand pip the CA bundle as a build secret
# (it never lands in an image layer):
#   docker build --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt -t textclf:latest .
# CPU torch from a local wheel folder inside the build context (git-ignored):
#   docker build --build-arg TORCH_WHEEL_DIR=.ci/context/wheels -t textclf:latest .
# CUDA image (PyPI's torch wheels are CUDA builds; or a cuXXX PyTorch index):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t textclf:gpu .
# Another model artifact directory from the build context:
#   docker build --build-arg MODEL_DIR=artifacts/imdb -t textclf:imdb .
# Any Debian-like base with python3 (>= 3.11) and the venv module works:
#   docker build --build-arg BASE_IMAGE=textclf-base:bookworm -t textclf:latest .

ARG BASE_IMAGE=python:3.11-slim
# Folder (inside the build context) holding a torch wheel to install instead of
# downloading one; the default matches no wheel, so the index below is used.
ARG TORCH_WHEEL_DIR=.

# --------------------------------------------------------------------------
# Optional local wheels: an empty stage unless TORCH_WHEEL_DIR holds *.whl.
FROM scratch AS torch-wheels
ARG TORCH_WHEEL_DIR
COPY ${TORCH_WHEEL_DIR}/*.whl /

# --------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Where torch comes from when no local wheel is given. The CPU index keeps the
# image small; PyPI (https://pypi.org/simple) or .../whl/cuXXX give CUDA builds.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=https://pypi.org/simple

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    PIP_INDEX_URL=${PIP_INDEX_URL} \
    PYTHONDONTWRITEBYTECODE=1

# python3 exists on python:*-slim and on Debian (where `python` may not).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Runtime dependencies only ([project.dependencies]; no train/dev extras),
# read from pyproject.toml so the torch pin lives in one place.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && grep -E '^torch([=<>~! ;[]|$)' /tmp/requirements.txt > /tmp/torch-requirements.txt \
    && cat /tmp/requirements.txt

# torch first (the big layer): from the local wheel folder if it has one,
# otherwise from TORCH_INDEX_URL. The optional `cacert` secret is the CA bundle
# for pip when a proxy re-signs TLS.
RUN --mount=type=bind,from=torch-wheels,target=/wheels \
    --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    if ls /wheels/*.whl > /dev/null 2>&1; then \
        pip install --no-cache-dir --no-deps --no-index --find-links /wheels \
            --requirement /tmp/torch-requirements.txt; \
    else \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
            --requirement /tmp/torch-requirements.txt; \
    fi

# The rest of the runtime dependencies (and torch's own) from the package index.
RUN --mount=type=bind,from=torch-wheels,target=/wheels \
    --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    pip install --no-cache-dir --find-links /wheels --requirement /tmp/requirements.txt

# The package itself (model/ and service/), without touching the dependencies;
# then drop what only building needs: C++ headers, test binaries, pip.
COPY README.md ./
COPY model/ model/
COPY service/ service/
RUN --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    pip install --no-cache-dir --no-deps . \
    && python -c "import model, service" \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "$site/torch/include" "$site/torch/test" "$site/torch/share/cmake" \
    && if [ -d "$site/torch/bin" ]; then \
        find "$site/torch/bin" -type f ! -name torch_shm_manager -delete; fi \
    && pip uninstall --yes pip setuptools wheel

# --------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

# Model artifact directory in the build context (config.json, vocab.json,
# model.safetensors, ...); produced by `python -m model.train --out artifacts/default`.
ARG MODEL_DIR=artifacts/default

LABEL org.opencontainers.image.title="textclf" \
      org.opencontainers.image.description="Text-classification REST service (FastAPI + PyTorch LSTM)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed, unprivileged uid/gid (matches runAsUser in deploy/k8s and compose).
RUN groupadd --system --gid 10001 textclf \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin textclf

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TEXTCLF_MODEL_DIR=/app/artifacts/default \
    TEXTCLF_HOST=0.0.0.0 \
    TEXTCLF_PORT=8000

WORKDIR /app

# The venv holds the runtime dependencies and the installed model/ and
# service/ packages; the artifact is read-only for the service user.
COPY --from=builder /opt/venv /opt/venv
COPY ${MODEL_DIR}/ /app/artifacts/default/

USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('TEXTCLF_PORT', '8000'), timeout=4)"]

CMD ["python", "-m", "service"]
