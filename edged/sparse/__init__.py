"""Sparse weight formats: edged's block-CSR for its C kernels, TFLite's encoding for .tflite files."""
