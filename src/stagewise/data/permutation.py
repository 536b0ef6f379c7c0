"""A keyed bijection on ``[0, n)``, computed on demand for any array of positions.

:class:`Permutation` is a 4-round Feistel network over the mixed radix ``a x b``
(``a = ceil(sqrt(n))``, ``b = ceil(n / a)``, so ``a * b - n < a``) with a splitmix64 round
function, plus cycle walking for the few values that land in ``[n, a * b)``. It is
evaluated on whole numpy arrays at once, and depends only on ``n`` and the key: the same
in every process, platform and Python version.

:class:`stagewise.data.order.MixtureSampler` also uses the helpers below (``_radices``,
``_round_keys``, ``_permute``, ``_ROUNDS``) to draw from every source at once, with radices
and round keys per element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S32 = np.uint64(27), np.uint64(30), np.uint64(32)
_ROUNDS = 4


def _splitmix64(x: int) -> int:
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _round_keys(key: int) -> list[int]:
    return [_splitmix64((key + i * _GOLDEN) & _MASK64) for i in range(_ROUNDS)]


def _radices(n: int) -> tuple[int, int]:
    """``a >= b`` with ``a * b >= n`` and ``a * b - n < a``: few values to cycle-walk."""
    if n <= 1:
        return 1, 1
    a = math.isqrt(n - 1) + 1
    return a, -(-n // a)


def _feistel(x: np.ndarray, hi: Any, lo: Any, keys: Sequence[Any]) -> np.ndarray:
    """One pass of the Feistel network on ``x`` in ``[0, hi * lo)`` (uint64 arrays or
    scalars; ``keys`` per round, scalars or arrays aligned with ``x``)."""
    left, right = np.divmod(x, lo)
    for key in keys:
        z = right ^ key
        # splitmix64's mixer without its last xorshift, which barely touches the high
        # half that the range reduction below reads.
        z ^= z >> _S30
        z *= _M1
        z ^= z >> _S27
        z *= _M2
        # (high 32 bits) * hi >> 32 lies in [0, hi): a multiply instead of a modulo.
        z >>= _S32
        z *= hi
        z >>= _S32
        z += left
        np.minimum(z, z - hi, out=z)  # (left + f) mod hi: unsigned wrap-around picks z
        left, right = right, z
        hi, lo = lo, hi
    return left * lo + right


def _take(value: Any, index: np.ndarray) -> Any:
    return value[index] if isinstance(value, np.ndarray) else value


def _permute(x: np.ndarray, n: Any, hi: Any, lo: Any, keys: Sequence[Any]) -> np.ndarray:
    """The keyed bijection on ``[0, n)`` (uint64 in and out): Feistel plus cycle walking."""
    y = _feistel(x, hi, lo, keys)
    walking = np.flatnonzero(y >= n)
    while walking.size:  # a value outside [0, n) is mapped again until it falls inside
        moved = _feistel(
            y[walking], _take(hi, walking), _take(lo, walking), [_take(k, walking) for k in keys]
        )
        y[walking] = moved
        walking = walking[moved >= _take(n, walking)]
    return y


class Permutation:
    """A seeded bijection on ``[0, n)``, computed on demand for any array of positions."""

    def __init__(self, n: int, key: int) -> None:
        if n < 0:
            raise ValueError(f"a permutation needs n >= 0, got {n}")
        self.n = int(n)
        self.key = int(key) & _MASK64
        a, b = _radices(self.n)
        self._hi, self._lo = np.uint64(a), np.uint64(b)
        self._n = np.uint64(self.n)
        self._keys = [np.uint64(k) for k in _round_keys(self.key)]

    def __call__(self, positions: Any) -> np.ndarray:
        x = np.asarray(positions)
        if x.size and x.dtype.kind not in "iu":
            raise TypeError(f"positions must be integers, got {x.dtype}")
        x = x.astype(np.int64, copy=False)
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.n):
            raise IndexError(f"positions must lie in [0, {self.n})")
        return self._apply(x.reshape(-1)).reshape(x.shape)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        """:meth:`__call__` without checks, for a 1-d int64 array already in range."""
        if self.n <= 1:
            return np.zeros_like(x)
        return _permute(x.astype(np.uint64), self._n, self._hi, self._lo, self._keys).astype(
            np.int64
        )

    def __repr__(self) -> str:
        return f"Permutation(n={self.n}, key={self.key:#x})"
