"""Optimizers and learning-rate schedules, with PyTorch's names, updates and state_dict layout.

An optimizer holds parameter groups (Tensors plus hyper-parameters) and updates each
parameter's ``.data`` in place from its ``.grad``:

    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=30)
    for epoch in range(epochs):
        for x, t in loader:
            optimizer.zero_grad()
            loss_fn(model(x), t).backward()
            optimizer.step()
        scheduler.step()
"""

from __future__ import annotations

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
