"""Image classification: image folders -> validated dataset -> CNN -> ONNX -> API."""

__version__ = "0.1.0"
