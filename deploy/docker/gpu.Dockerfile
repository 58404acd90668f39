# The GPU actor image (enhance: SDXL img2img): CUDA runtime, torch built for CUDA,
# diffusers, and the project tree at /app like the runtime image.
#
# Build from the project root (not built on the machine this was written on: it has no
# container engine and no GPU):
#   docker build -f deploy/docker/gpu.Dockerfile -t asya-gpu:dev .
# Bake the model weights in, so that a replica scaled up from zero does not download
# them first (several GB):
#   docker build -f deploy/docker/gpu.Dockerfile --build-arg MODEL_ID=stabilityai/sdxl-turbo \
#     -t asya-gpu:dev .
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models \
    HOME=/tmp

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
# torch for CUDA 12.6 first; the `enhance` extra would otherwise pull a default build
RUN pip install torch==2.7.1 --index-url https://download.pytorch.org/whl/cu126

WORKDIR /app
COPY pyproject.toml README.md ./
COPY asya_agents ./asya_agents
RUN pip install -e '.[rabbitmq,sqs,postgres,metrics,otel,enhance]'
COPY . .

ARG MODEL_ID=""
RUN mkdir -p /models && if [ -n "$MODEL_ID" ]; then \
      python -c "import sys; from diffusers import AutoPipelineForImage2Image as P; \
P.from_pretrained(sys.argv[1])" "$MODEL_ID"; \
    fi && chown -R 10001:10001 /models

USER 10001
CMD ["asya", "--help"]
