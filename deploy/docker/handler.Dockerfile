# A data scientist's actor: only handler.py (and, if present, requirements.txt) on top
# of the runtime image the platform team publishes. Build in the folder that holds
# handler.py:
#   docker build -f /path/to/deploy/docker/handler.Dockerfile \
#     --build-arg BASE=registry.example/asya-runtime:1.0 -t registry.example/my-actor:1 .
# The manifest then says `image: registry.example/my-actor:1` and
# `handler: handler.MyClass.method` (or `handler.my_function`). DEST must be on the
# mesh's pythonPath in the image: /app for actors the operator runs; for `asya render`,
# the folder the mesh's pythonPath names under --image-root.
ARG BASE=asya-runtime:latest
FROM ${BASE}
ARG DEST=/app

USER root
COPY requirements.tx[t] /tmp/handler-req/
RUN if [ -f /tmp/handler-req/requirements.txt ]; then \
      pip install -r /tmp/handler-req/requirements.txt; fi && rm -rf /tmp/handler-req
COPY handler.py ${DEST}/handler.py
USER 10001
