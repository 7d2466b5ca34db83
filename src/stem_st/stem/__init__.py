"""The Stem model class (:class:`StemModel`), how it is fitted and how it samples."""

from .model import StemModel
from .settings import PredictSettings, TrainSettings

__all__ = ["PredictSettings", "StemModel", "TrainSettings"]
