"""tritonctl: the Triton Inference Server experience in Python."""

__version__ = "0.1.0"
