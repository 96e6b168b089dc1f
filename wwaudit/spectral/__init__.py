"""The science: spectra, power-law and Marchenko-Pastur fits, traps, distributions, metrics
and the per-layer analysis. Pure numpy/scipy on matrices: nothing here reads ONNX."""
