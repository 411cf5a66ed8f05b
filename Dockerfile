# The Strata server (scripts/serve.py): an OpenAI-compatible API over a trained model.
#
#   docker build -t strata-serve .
#   docker run --rm -p 8000:8000 -v $PWD/exports/sft:/model:ro -v $PWD/serve_logs:/logs \
#       -e STRATA_API_KEY=change-me strata-serve --hf_dir=/model --request_log=/logs
#
# CPU JAX as pinned in pyproject.toml. For NVIDIA GPUs, build FROM an image with CUDA 12 and install
# `jax[cuda12]` of the same version after the project (see the README's Serving section).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

# A user without privileges runs the server.
RUN useradd --create-home --uid 1000 strata
WORKDIR /app

# Dependencies first, so code edits do not reinstall them.
COPY pyproject.toml README.md ./
COPY errors.py quiet_logs.py typed_config.py train.py ./
COPY configs ./configs
COPY data ./data
COPY model ./model
COPY parallel ./parallel
COPY trainer ./trainer
COPY evals ./evals
RUN pip install --upgrade pip && pip install '.[serve]'
COPY scripts ./scripts

USER strata
EXPOSE 8000
# --host=0.0.0.0: inside the container the port is reached through Docker's mapping only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["python", "scripts/serve.py", "--host=0.0.0.0", "--port=8000"]
CMD ["--help"]
