"""The real TensorRT Python bindings (PyPI's ``tensorrt-cuXX-bindings`` wheels) imported on stub native
libraries, so that the TensorRT API the project and its stand-in use can be checked without a GPU."""
