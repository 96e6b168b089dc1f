"""wwaudit: data-free spectral audit of ONNX neural-network weights (Martin & Mahoney's method)."""

__version__ = "0.1.0"
