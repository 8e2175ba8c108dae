# Local stand-in for prom/prometheus (no registry can be reached from CI):
# Debian's prometheus binary on the locally built Debian base image. Same
# entrypoint, user and data directory as the official image, so
# docker-compose.yml works with either (PROMETHEUS_IMAGE=textclf-prometheus:local).
# Built by run_container_test.sh from a context holding the `prometheus` binary.
ARG BASE_IMAGE=textclf-base:bookworm
FROM ${BASE_IMAGE}

COPY prometheus /bin/prometheus

RUN mkdir -p /etc/prometheus /prometheus \
    && chown 65534:65534 /prometheus \
    && /bin/prometheus --version

USER 65534:65534
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090

ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
