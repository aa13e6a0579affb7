# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then run it as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY clients ./clients
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
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
