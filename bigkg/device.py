"""Which torch device a config asks for; shared by training and evaluation."""

from __future__ import annotations

import torch

from bigkg.config import Config, ConfigError


def build_device(config: Config) -> torch.device:
    """``auto`` is the GPU when there is one; an explicit ``cuda`` without CUDA is an error."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {config.device!r} was asked for but CUDA is not available here")
    return device
