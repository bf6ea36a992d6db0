"""Triton kernels, one file each, every one with a launcher and a PyTorch twin (see ops.py).

Launchers exported here are picked up by triton_softmax.ops by name.
"""
