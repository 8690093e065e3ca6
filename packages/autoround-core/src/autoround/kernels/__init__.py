"""Kernels for packed GPTQ-layout weights: Triton kernels, each with a plain-torch twin.

``reference.py`` holds the twins (pure torch, any device); ``triton_gemm.py`` the Triton kernels,
importable only where ``triton`` is installed.
"""
