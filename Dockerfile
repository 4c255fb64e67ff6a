# syntax=docker/dockerfile:1
# crmstream worker image.
#
#   docker build -t crmstream .
#   docker build --build-arg CRM_EXTRAS=rocksdb -t crmstream .   # for CRM_STORE=rocksdb://
#
# The build context is an allow-list (.dockerignore): only pyproject.toml,
# constraints.txt (the versions the tests passed with), README.md and the package
# directories are sent.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .

# Optional extras, comma separated (e.g. "rocksdb"); empty installs the base package.
ARG CRM_EXTRAS=""
RUN pip install --upgrade pip \
    && if [ -n "$CRM_EXTRAS" ]; then pip install -c constraints.txt ".[$CRM_EXTRAS]"; \
       else pip install -c constraints.txt .; fi


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="crmstream" \
      org.opencontainers.image.description="Real-time customer-care and retention engine (worker)" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid crm --home-dir /home/crm --create-home \
       --shell /usr/sbin/nologin crm \
    && install -d -o crm -g crm -m 0750 /var/lib/crmstream

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CRM_WEB_HOST=0.0.0.0 \
    CRM_WEB_PORT=6066 \
    CRM_DATA_DIR=/var/lib/crmstream

USER crm:crm
WORKDIR /var/lib/crmstream

EXPOSE 6066

# Liveness: the worker's /livez page (readiness, /readyz, is 503 while rebalancing).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('CRM_WEB_PORT', '6066'), timeout=4)"]

STOPSIGNAL SIGTERM
CMD ["crmstream", "worker"]
