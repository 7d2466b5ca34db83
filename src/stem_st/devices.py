"""Which torch device a run uses: ``auto`` is a GPU when one is present, as in the CLI."""

from __future__ import annotations

from .errors import require

#: what every ``device`` argument accepts, in words
DEVICE_FORMS = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def resolve_device(name: str | object) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; refuse unknown or unavailable devices.
    A ``torch.device`` is accepted and returned as its string."""
    import torch

    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    require(name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()),
            f"unknown device '{name}': use {DEVICE_FORMS}")
    require(name == "cpu" or torch.cuda.is_available(), f"device '{name}' is not available (no CUDA GPU)")
    return name
