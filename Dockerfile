# CPU image: docker build -t muesli_jax . && docker run --rm -v $PWD/runs:/app/runs muesli_jax
# For GPUs, base on an NVIDIA CUDA 12 image and install ".[cuda12]" instead.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY muesli_jax ./muesli_jax
RUN pip install --no-cache-dir -c constraints.txt ".[test]"
COPY configs ./configs
COPY scripts ./scripts
COPY tests ./tests
CMD ["python", "scripts/train.py", "--config", "configs/lunar.py"]
