"""TensorRT on the target, torch-free: version checks, the CUDA device, and the engine builder shared by
``jasco-run build-engines`` and ``jasco-export --backend trt``.

Every module imports ``tensorrt`` / ``polygraphy`` / ``cuda-python`` lazily, inside functions, so
``jasco_runtime`` itself imports with numpy only.
"""
