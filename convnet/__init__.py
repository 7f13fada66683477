"""convnet: AlexNet-family convolutional networks on hand-written CUDA kernels.

See docs/design.md for how the pieces fit.
"""
__version__ = "0.1.0"
