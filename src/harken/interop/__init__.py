"""Interoperability: ONNX export and runtime, importing NeMo and Hugging Face models, the model hub."""
