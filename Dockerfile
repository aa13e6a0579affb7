# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then run it as a non-root user (uid and gid 10001).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY clients ./clients
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --gid 10001 isb && useradd --create-home --uid 10001 --gid 10001 isb
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY examples ./examples
# The production policy template, not the dev one; mount the deployment's own over /app/policy.
RUN mkdir -p /app/var /app/certs /app/policy \
    && cp examples/policy-production.toml /app/policy/policy.toml \
    && chown -R isb:isb /app/var /app/policy
USER isb
# The deployment's PKI is mounted read-only at /app/certs: broker.crt, broker.key, ca.crt,
# audit.key (and crl.pem). Keys are read by uid 10001: give them group 10001 and mode 0640 on the
# host (README, "Container"); the broker names any file it cannot read and exits.
ENV ISB_LISTEN=0.0.0.0:7443 \
    ISB_CERT_DIR=/app/certs \
    ISB_POLICY_FILE=/app/policy/policy.toml \
    ISB_HEALTH_FILE=/app/var/health.json
EXPOSE 7443
# The broker's health file (no client certificate needed: the gRPC port is mutual TLS only).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s \
    CMD ["python", "-m", "clients.healthcheck"]
ENTRYPOINT ["isb"]
CMD ["serve"]
