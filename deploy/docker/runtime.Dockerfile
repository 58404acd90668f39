# The runtime image: asya-agents with the cluster extras (brokers, PostgreSQL store,
# metrics, review console, operator) and the project tree at /app, where `asya render`
# expects the mesh's code (--image-root). Crew actors, the review console, the operator
# and every CPU actor without its own spec.image run on it.
#
# Build from the project root (there is no container engine on the build machine this
# file was written on; it has not been built there):
#   docker build -f deploy/docker/runtime.Dockerfile -t asya-runtime:dev .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /app
# dependencies first, so that editing a handler does not reinstall them
COPY pyproject.toml README.md ./
COPY asya_agents ./asya_agents
RUN pip install -e '.[rabbitmq,sqs,postgres,metrics,otel,judge,ui,k8s]'
# actors/, mesh/, ui/ (the console is run from beside the package)
COPY . .

# pods run with runAsNonRoot and runAsUser 10001 (see asya_agents/k8s/render.py)
USER 10001
CMD ["asya", "--help"]
