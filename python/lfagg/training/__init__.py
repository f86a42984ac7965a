"""Algorithm 1's training loop (:func:`train_encoder`) and its optimisers."""
from .loop import MAX_KEPT_ASSIGNMENTS_BYTES, SGDSettings, TrainResult, run_sgd, train_encoder
from .optim import SGD, Adam, make_optimizer

__all__ = ["train_encoder", "run_sgd", "SGDSettings", "TrainResult", "MAX_KEPT_ASSIGNMENTS_BYTES", "SGD", "Adam",
           "make_optimizer"]
