"""Algorithm 1's training loop (:func:`train_encoder`) and its optimisers."""
from .loop import TrainingDiverged, TrainResult, train_encoder
from .optim import SGD, Adam

__all__ = ["train_encoder", "TrainResult", "TrainingDiverged", "SGD", "Adam"]
