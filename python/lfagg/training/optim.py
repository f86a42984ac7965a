"""First-order optimisers that update lists of numpy arrays in place."""
from __future__ import annotations

import numpy as np


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum.

    Parameters
    ----------
    params : list of float arrays, updated in place by :meth:`step`.
    learning_rates : list of floats, one per array.
    momentum : float in [0, 1).
    """

    def __init__(self, params, learning_rates, momentum: float = 0.9):
        self.params, self.learning_rates, self.momentum = params, learning_rates, momentum
        self._velocity = [np.zeros_like(p) for p in params]

    def step(self, grads) -> None:
        """Moves every parameter in place by its gradient in ``grads`` (same order and shapes)."""
        for p, g, v, lr in zip(self.params, grads, self._velocity, self.learning_rates):
            v *= self.momentum
            v -= lr * g
            p += v


class Adam:
    """Adam (Kingma & Ba, 2015): steps of about ``learning_rate`` per coordinate.

    Parameters are those of :class:`SGD`, plus the usual ``betas`` and ``eps``.
    """

    def __init__(self, params, learning_rates, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.learning_rates, self.betas, self.eps = params, learning_rates, betas, eps
        self._m = [np.zeros_like(p) for p in params]
        self._v = [np.zeros_like(p) for p in params]
        self._t = 0

    def step(self, grads) -> None:
        """Moves every parameter in place by its gradient in ``grads`` (same order and shapes)."""
        self._t += 1
        b1, b2 = self.betas
        correction = np.sqrt(1 - b2 ** self._t) / (1 - b1 ** self._t)
        for p, g, m, v, lr in zip(self.params, grads, self._m, self._v, self.learning_rates):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * np.square(g)
            p -= (lr * correction) * m / (np.sqrt(v) + self.eps)


#: The optimisers by name.
OPTIMIZERS = ("adam", "sgd")


def make_optimizer(name: str, params, learning_rates, momentum: float = 0.9):
    """``"sgd"`` (with momentum) or ``"adam"`` (a name of :data:`OPTIMIZERS`, checked by the
    caller) over the arrays ``params``."""
    return SGD(params, learning_rates, momentum) if name == "sgd" else Adam(params, learning_rates)
