"""Reading ONNX: loader, tensors, the graph walker, quantisation and the layer plan.

The only package that imports onnx; it hands the engine LayerSpecs (what to analyse, how to
materialise each matrix) and never computes a metric."""
