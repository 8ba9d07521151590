"""edgesdk.runtime: torch-free bundle reader, backends, samplers. This is what a phone runs."""

from edgesdk.runtime.backends import (
    BACKENDS,
    OnnxSession,
    Session,
    StaticBatchSession,
    TensorRTSession,
    open_session,
    register_backend,
)
from edgesdk.runtime.bundle import Bundle, ComponentInfo, TensorSpec, open_bundle
from edgesdk.runtime.classify import ImageClassifier, Prediction
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.image import grid, save_grid
from edgesdk.runtime.onestep import OneStepTextToImage
from edgesdk.runtime.pipeline import ComponentPipeline, TextToImage, initial_noise, to_uint8
from edgesdk.runtime.samplers import SAMPLERS, sample_ddim, sample_dpmpp_2m, timesteps
from edgesdk.runtime.tokenizer import Tokenizer

__all__ = [
    "BACKENDS",
    "SAMPLERS",
    "Bundle",
    "ComponentInfo",
    "ComponentPipeline",
    "EdgeSDKError",
    "ImageClassifier",
    "OneStepTextToImage",
    "OnnxSession",
    "Prediction",
    "Session",
    "StaticBatchSession",
    "TensorRTSession",
    "TensorSpec",
    "TextToImage",
    "Tokenizer",
    "grid",
    "initial_noise",
    "open_bundle",
    "open_session",
    "register_backend",
    "sample_ddim",
    "sample_dpmpp_2m",
    "save_grid",
    "timesteps",
    "to_uint8",
]
