"""Training recipes (PyTorch; single process or torchrun DDP)."""
