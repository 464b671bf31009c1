# The Stockade operator image. Multi-stage: dependencies are built in a full Python image, the
# runtime stage is slim, runs as a non-root user and needs a writable /tmp only.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /install /usr/local
# A named user: Python's getpass (kopf calls it) fails for a uid /etc/passwd does not know.
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /app
ENTRYPOINT ["kopf", "run", "--standalone", "--all-namespaces", "-m", "stockade.handlers"]
