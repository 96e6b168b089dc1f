"""A weight matrix read in blocks on demand: the ingest stage makes it, the spectral stage reads it.

Why: a quantized weight (MatMulNBits int4) dequantized whole is a float32 copy 8x its stored size
(0.5 GB for a 32000 x 4096 LM head), and a memory-mapped table keeps every page it touched
resident while it is mapped. The analysis needs neither: the Gram matrix, the structure pass and
the finiteness checks all run over row chunks. A `StreamedMatrix` hands out exactly those chunks
(dequantized, or read from the file, at the moment they are asked for) and behaves like a 2-D
numpy array for the few operations the streaming analysis uses: `shape`, `dtype`, `T`, row
slices `W[a:b]` and rows `W[i]`. Anything else that needs the whole matrix (an SVD, a shuffled
copy) gets it through `np.asarray(W)`, which reads it block by block into one array: the values
are the same as the eager path's, element for element.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# read(rows, cols): the block W[rows, cols] of the (out x in) matrix, as a new array.
BlockReader = Callable[[slice, slice], np.ndarray]

# np.asarray(W) reads the matrix in blocks of about this many elements.
_DENSE_CHUNK = 1 << 22


class StreamedMatrix:
    """An (out x in) matrix of `shape` and `dtype` whose blocks `read` returns on demand."""

    ndim = 2

    def __init__(self, shape: tuple[int, int], dtype: Any, read: BlockReader) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._read = read

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def T(self) -> StreamedMatrix:
        """The transpose: its row blocks are this matrix's column blocks (transposed views)."""
        read = self._read
        return StreamedMatrix((self.shape[1], self.shape[0]), self.dtype, lambda rows, cols: read(cols, rows).T)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows `W[a:b]` (a new array, or a view of one) or one row `W[i]`; nothing else."""
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} outside a matrix of {self.shape[0]} rows")
            return self._read(slice(i, i + 1), slice(0, self.shape[1]))[0]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self._read(slice(start, max(start, stop)), slice(0, self.shape[1]))
        raise TypeError(f"a streamed matrix gives row slices only, not {key!r}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole matrix, read in row blocks into one array (the metrics that need it all)."""
        out = np.empty(self.shape, dtype=self.dtype)
        step = max(1, _DENSE_CHUNK // max(1, self.shape[1]))
        for start in range(0, self.shape[0], step):
            out[start : start + step] = self[start : start + step]
        return out if dtype is None else out.astype(dtype, copy=False)


def row_chunks(W: Any, elements: int | None = None) -> Any:
    """Row blocks of an array or StreamedMatrix of about `elements` values each (checks that pass
    over every value without holding a full-size temporary)."""
    step = max(1, (elements or _DENSE_CHUNK) // max(1, W.shape[1] if W.ndim > 1 else 1))
    for start in range(0, W.shape[0], step):
        yield np.asarray(W[start : start + step])
