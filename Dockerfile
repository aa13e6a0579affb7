# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then run it as a non-root user.
FROM python:3.11-slim AS build
# PyICU (screening transliteration) compiles against Debian's ICU.
RUN apt-get update && apt-get install -y --no-install-recommends libicu-dev pkg-config g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY clients ./clients
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# The ICU runtime library whatever its soname version in this Debian release.
RUN apt-get update && apt-get install -y --no-install-recommends \
        "$(apt-cache search --names-only '^libicu[0-9]+$' | cut -d' ' -f1 | head -1)" \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 isb
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY examples ./examples
RUN mkdir -p /app/var /app/certs && chown -R isb:isb /app
USER isb
ENV ISB_LISTEN=0.0.0.0:7443
EXPOSE 7443
# gRPC health checking over mTLS, with the admin certificate of the mounted PKI.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-m", "clients.healthcheck"]
ENTRYPOINT ["isb"]
CMD ["serve"]
