# The studio image used by docker-compose.yml (API, workers and Flower run the same image).
FROM python:3.11-slim

# Headless MuJoCo rendering (EGL through Mesa on CPU; the NVIDIA runtime provides its own on GPUs).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV MUJOCO_GL=egl GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# torch first, so a CUDA build can be chosen: --build-arg TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
ARG TORCH=torch
RUN pip install --no-cache-dir $TORCH

COPY pyproject.toml README.md ./
COPY cli cli
COPY sim sim
COPY models models
COPY workers workers
COPY backend backend
COPY frontend frontend
RUN pip install --no-cache-dir ".[cluster,lerobot]" && pip install --no-cache-dir --no-deps "lerobot-dataset==0.4.4"

EXPOSE 8000 5555
CMD ["vlarft", "api", "--host", "0.0.0.0", "--port", "8000"]
