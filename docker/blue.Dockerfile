# Blue: the Flask app (legacy_flask/) under gunicorn.
# Build from the repository root (docker/compose.yaml does this):
#   docker build -f docker/blue.Dockerfile -t chatbot-blue .
# tests/docker/test_docker.py checks this file statically.

# ---- builder: a virtualenv with the pinned dependencies ------------------------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.app.lock /tmp/requirements.app.lock
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.app.lock

# ---- runtime: the venv and the code, nothing else -----------------------------------------
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOST=0.0.0.0 \
    PORT=8001
WORKDIR /app
# code stays owned by root: the app user can read it, not change it
COPY shared/ ./shared/
COPY legacy_flask/ ./legacy_flask/
USER 10001:10001
EXPOSE 8001
# gunicorn: SIGTERM = graceful stop (in-flight requests finish, worker_exit flushes metrics)
STOPSIGNAL SIGTERM
# slim has no curl; python reads PORT itself because exec form does not expand variables
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8001') + '/health', timeout=4); sys.exit(0 if r.status == 200 else 1)"]
# = devstack.commands.BLUE_CMD
CMD ["gunicorn", "-c", "legacy_flask/gunicorn.conf.py", "legacy_flask.wsgi:app"]
