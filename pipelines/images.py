"""The one place component base images come from (override with BERTPIPE_CPU_IMAGE / BERTPIPE_GPU_IMAGE)."""

import os

CPU_IMAGE = os.environ.get("BERTPIPE_CPU_IMAGE", "ghcr.io/bertpipe/bertpipe-cpu:0.1.0")
GPU_IMAGE = os.environ.get("BERTPIPE_GPU_IMAGE", "ghcr.io/bertpipe/bertpipe-cuda:0.1.0")
