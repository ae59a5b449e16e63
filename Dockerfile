# CPU image:
#   docker build -t muesli_jax .
#   docker run --rm -v $PWD/runs:/app/runs muesli_jax
# NVIDIA GPU image (CUDA 12 comes with the jax[cuda12] wheels; the host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit):
#   docker build --build-arg DEVICE=cuda12 -t muesli_jax:cuda12 .
#   docker run --rm --gpus all -v $PWD/runs:/app/runs muesli_jax:cuda12
FROM python:3.11-slim
ARG DEVICE=cpu
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY muesli_jax ./muesli_jax
RUN case "$DEVICE" in \
      cpu) extras="train,test,pixels,video,sweep,anakin,mujoco,results" ;; \
      cuda12) extras="train,test,pixels,video,sweep,anakin,mujoco,results,cuda12" ;; \
      *) echo "DEVICE must be cpu or cuda12, got $DEVICE" >&2; exit 1 ;; \
    esac \
    && pip install --no-cache-dir -c constraints.txt ".[$extras]" \
    && pip install --no-cache-dir -c constraints.txt --no-deps gymnax
COPY configs ./configs
COPY scripts ./scripts
COPY tests ./tests
CMD ["python", "scripts/train.py", "--config", "configs/lunar.py"]
