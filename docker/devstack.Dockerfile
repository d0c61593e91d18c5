# devstack: the embedded local AWS stack (moto server for DynamoDB/CloudWatch + the Bedrock
# agent-runtime emulator), for docker/compose.yaml. Not for production.
#   docker build -f docker/devstack.Dockerfile -t chatbot-devstack .
# tests/docker/test_docker.py checks this file statically.

# ---- builder: a virtualenv with the pinned dependencies (moto included) -------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.devstack.lock /tmp/requirements.devstack.lock
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.devstack.lock

# ---- runtime -------------------------------------------------------------------------------
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
    MOTO_PORT=5000 \
    AGENT_PORT=5001
WORKDIR /app
COPY shared/ ./shared/
COPY devstack/ ./devstack/
USER 10001:10001
EXPOSE 5000 5001
STOPSIGNAL SIGTERM
# healthy = the agent emulator answers its health route and the last thing devstack creates at
# start-up (TTL on the rate-limit table) is in place
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import os, sys, urllib.request, boto3, botocore.config; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('AGENT_PORT', '5001') + '/_emulator/health', timeout=2); ddb = boto3.client('dynamodb', endpoint_url='http://127.0.0.1:' + os.environ.get('MOTO_PORT', '5000'), region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing', config=botocore.config.Config(connect_timeout=2, read_timeout=2, retries={'max_attempts': 1})); ttl = ddb.describe_time_to_live(TableName='chat_rate_limits')['TimeToLiveDescription']; sys.exit(0 if ttl.get('TimeToLiveStatus') == 'ENABLED' else 1)"]
# = devstack.commands.DEVSTACK_CMD, bound to every interface so blue and green can reach it
CMD ["python", "-m", "devstack", "--host", "0.0.0.0"]
