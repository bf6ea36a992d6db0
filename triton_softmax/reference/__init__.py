"""PyTorch twins of the Triton kernels, one module per kernel file (kernels/X.py: reference/X.py).

The oracle the kernel tests compare against, and the path ops.py routes to where Triton does
not run (CPU tensors, float64, softcap). These modules import torch and each other only:
nothing above them in the package.
"""
