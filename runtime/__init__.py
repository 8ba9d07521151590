"""edgesdk.runtime: torch-free bundle reader, backends, samplers, classifier, video restorer. This is what a phone
runs."""

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
from edgesdk.runtime.clip_tokenizer import ClipTokenizer
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.image import grid, save_grid
from edgesdk.runtime.metrics import psnr_y, ssim_y
from edgesdk.runtime.onestep import OneStepTextToImage
from edgesdk.runtime.pipeline import ComponentPipeline, TextToImage, initial_noise, to_uint8
from edgesdk.runtime.restore import VideoRestorer
from edgesdk.runtime.samplers import SAMPLERS, sample_ddim, sample_dpmpp_2m, timesteps
from edgesdk.runtime.tasks import TASKS, open_pipeline, open_text_to_image
from edgesdk.runtime.tokenizer import Tokenizer
from edgesdk.runtime.video import read_frames, restore_video, write_frames

__all__ = [
    "BACKENDS",
    "SAMPLERS",
    "TASKS",
    "Bundle",
    "ClipTokenizer",
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
    "VideoRestorer",
    "grid",
    "initial_noise",
    "open_bundle",
    "open_pipeline",
    "open_session",
    "open_text_to_image",
    "psnr_y",
    "read_frames",
    "register_backend",
    "restore_video",
    "sample_ddim",
    "sample_dpmpp_2m",
    "save_grid",
    "ssim_y",
    "timesteps",
    "to_uint8",
    "write_frames",
]
