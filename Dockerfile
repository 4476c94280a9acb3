# The image every node of a KubeRay cluster runs (see cluster/README.md):
#   docker build -t registry.example.com/shopstream:0.1.0 . && docker push registry.example.com/shopstream:0.1.0
# Ray's image brings Ray 2.60 and Python 3.11; PyPI's Linux torch wheel is the CUDA build,
# which also runs on CPU-only pods.
FROM rayproject/ray:2.60.0-py311-gpu
COPY --chown=ray:users pyproject.toml README.md /home/ray/shopstream/
COPY --chown=ray:users training /home/ray/shopstream/training
COPY --chown=ray:users serving /home/ray/shopstream/serving
COPY --chown=ray:users tuning /home/ray/shopstream/tuning
COPY --chown=ray:users cluster /home/ray/shopstream/cluster
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir /home/ray/shopstream
WORKDIR /home/ray/shopstream
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
