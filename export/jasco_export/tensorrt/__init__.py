"""TensorRT side of the export: ONNX-graph compatibility check against TensorRT's op table."""
