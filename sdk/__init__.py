"""edgesdk: PyTorch models to phones and edge boards, and on-device learning with forward passes only."""

from edgesdk.runtime.errors import EdgeSDKError

__version__ = "0.1.0"
__all__ = ["EdgeSDKError", "__version__"]
