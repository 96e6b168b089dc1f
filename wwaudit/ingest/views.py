"""Views: how a stored tensor becomes (out x in) matrices, with their shapes known before any read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class View:
    """How a stored tensor becomes (out x in) matrices: a recipe name and its parameters."""

    kind: str  # dense | conv | embedding | recurrent | attention
    recipe: str  # matrix | matrix_t | batched | batched_t | conv | conv_t | gate | columns_t | rows
    params: tuple = ()
    suffix: str = ""

    @property
    def share_key(self) -> tuple:
        """Views that give the same singular values of the same tensor are analysed once."""
        if self.recipe in ("matrix", "matrix_t"):
            return ("matrix",)
        if self.recipe in ("batched", "batched_t"):
            return ("batched",)
        return (self.recipe, self.params)


def view_shape(dims: tuple[int, ...], view: View) -> tuple[int, int, int]:
    """(rows, cols, slices) of the matrices `extract` will give for a tensor of shape `dims`."""
    r = view.recipe
    if r == "matrix":
        return dims[0], dims[1], 1
    if r == "matrix_t":
        return dims[1], dims[0], 1
    if r in ("batched", "batched_t"):
        count = math.prod(dims[:-2])
        a, b = dims[-2], dims[-1]
        return (a, b, count) if r == "batched" else (b, a, count)
    if r == "conv":
        groups = view.params[0]
        return dims[0] // groups, dims[1], groups * math.prod(dims[2:])
    if r == "conv_t":
        groups = view.params[0]
        return dims[1], dims[0] // groups, groups * math.prod(dims[2:])
    if r == "gate":
        _direction, _gate, hidden = view.params
        return hidden, dims[2], 1
    if r == "columns_t":
        start, stop = view.params
        return stop - start, dims[0], 1
    if r == "rows":
        start, stop = view.params
        return stop - start, dims[1], 1
    raise ValueError(f"unknown view recipe {r}")


def extract(arr: np.ndarray, view: View) -> list[np.ndarray]:
    """The (out x in) matrices of a view, as views into `arr` where numpy allows."""
    r = view.recipe
    if r == "matrix":
        return [arr]
    if r == "matrix_t":
        return [arr.T]
    if r in ("batched", "batched_t"):
        stack = arr.reshape((-1,) + arr.shape[-2:])
        return [m if r == "batched" else m.T for m in stack]
    if r in ("conv", "conv_t"):
        groups = view.params[0]
        per = arr.shape[0] // groups
        kernel = arr.reshape(arr.shape[0], arr.shape[1], -1)
        out = []
        for g in range(groups):
            block = kernel[g * per : (g + 1) * per]
            for pos in range(block.shape[2]):
                m = block[:, :, pos]
                out.append(m if r == "conv" else m.T)
        return out
    if r == "gate":
        direction, gate, hidden = view.params
        return [arr[direction, gate * hidden : (gate + 1) * hidden, :]]
    if r == "columns_t":
        start, stop = view.params
        return [arr[:, start:stop].T]
    if r == "rows":
        start, stop = view.params
        return [arr[start:stop]]
    raise ValueError(f"unknown view recipe {r}")
