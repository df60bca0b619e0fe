"""Graph declarations (I/O contracts, profiles, roles) and their ONNX export: fp32, mixed fp16, int8."""
