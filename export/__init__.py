"""edgesdk.export: torch.export capture, lowering to ExecuTorch / ONNX / TensorRT-ready ONNX, bundles, parity."""
