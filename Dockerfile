# driftline worker / API image (used by docker-compose.yml).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/var/cache/driftline/numba
WORKDIR /app
COPY pyproject.toml README.md ./
COPY driftline driftline
COPY schemas schemas
COPY detectors detectors
COPY sinks sinks
COPY streams streams
COPY api api
RUN pip install . && mkdir -p /var/cache/driftline/numba /var/lib/driftline
ENV DRIFTLINE_DATA_DIR=/var/lib/driftline
ENTRYPOINT ["driftline"]
CMD ["worker"]
