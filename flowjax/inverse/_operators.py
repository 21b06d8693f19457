"""Linear measurement operators ``y = A x`` for inverse problems, with shape checks.

An operator maps a batch ``x`` of shape ``[B, *in_shape]`` to measurements ``[B, m]`` (the event
is flattened in C order). Besides ``apply`` each operator knows its adjoint ``A^T``, its dense
matrix (``[m, D]``, for the exact Gaussian-mixture posterior), the pseudo-inverse ``A^+ y`` and
``(r^2 A A^T + s^2 I)^{-1} v`` (the covariance solve of pseudo-inverse guidance), each in the
cheapest form the structure allows:

* :class:`MatrixOperator`: any dense ``A`` ``[m, D]``;
* :class:`Inpainting`: keep the pixels where a mask is true (``A A^T = I``);
* :class:`Identity`: ``y = x`` (denoising; ``A A^T = I``).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from flowjax import _validation as v

__all__ = ["Identity", "Inpainting", "LinearOperator", "MatrixOperator", "measure"]


def _shape_tuple(shape: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of positive ints; got {shape!r}") from None
    if not out or any(s < 1 for s in out):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints; got {shape!r}")
    return out


class LinearOperator(eqx.Module):
    """``y = A x`` from events of shape ``in_shape`` to ``[m]``; batch-first on both sides."""

    in_shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def in_dim(self) -> int:
        """``D``, the number of entries of one event."""
        return math.prod(self.in_shape)

    @property
    @abc.abstractmethod
    def out_dim(self) -> int:
        """``m``, the number of measurements."""

    @abc.abstractmethod
    def _apply_flat(self, xf: Array) -> Array: ...

    @abc.abstractmethod
    def _adjoint_flat(self, y: Array) -> Array: ...

    @abc.abstractmethod
    def matrix(self) -> Float[Array, "m D"]:
        """The dense matrix ``[m, D]`` acting on flattened events."""

    @abc.abstractmethod
    def gram_solve(
        self, vec: Float[Array, "B m"], r2: Float[ArrayLike, "*B"], s2: Float[ArrayLike, ""]
    ) -> Float[Array, "B m"]:
        """``(r2 A A^T + s2 I)^{-1} vec`` per row (``r2`` scalar or ``[B]``, ``s2`` scalar)."""

    # ------------------------------------------------------------------ checks
    def check_x(self, x: Any, name: str = "x") -> Array:
        """``x`` must be floating ``[B, *in_shape]``; the error names the operator's shapes."""
        x = v.require_floating(x, name)
        if x.ndim < 2 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"the operator A ({type(self).__name__}: [m, D] = [{self.out_dim}, {self.in_dim}]) "
                f"acts on {name} of shape [B, *{self.in_shape}]; got {name} of shape {x.shape}"
            )
        return x

    def check_y(self, y: Any, name: str = "y") -> Array:
        """A measurement ``[m]`` or ``[B, m]``: floating, matching ``out_dim``, finite (NaN named)."""
        y = v.require_floating(y, name)
        if y.ndim not in (1, 2) or y.shape[-1] != self.out_dim:
            raise ValueError(
                f"{name} must have shape [m] or [B, m] with m = {self.out_dim} (the rows of the "
                f"operator A, {type(self).__name__}); got {name} of shape {y.shape}"
            )
        v.check_finite(y if y.ndim == 2 else y[None], name)
        return y

    # ------------------------------------------------------------------ actions
    def apply(self, x: Float[ArrayLike, "B ..."]) -> Float[Array, "B m"]:
        """``A x`` for each row."""
        x = self.check_x(x)
        return self._apply_flat(x.reshape(x.shape[0], -1))

    def __call__(self, x: Float[ArrayLike, "B ..."]) -> Float[Array, "B m"]:
        return self.apply(x)

    def adjoint(self, y: Float[ArrayLike, "B m"]) -> Float[Array, "B ..."]:
        """``A^T y`` for each row, shaped ``[B, *in_shape]``."""
        y = v.require_floating(y, "y")
        if y.ndim != 2 or y.shape[1] != self.out_dim:
            raise ValueError(f"y must have shape [B, {self.out_dim}]; got {y.shape}")
        return self._adjoint_flat(y).reshape((y.shape[0], *self.in_shape))

    def pinv(self, y: Float[ArrayLike, "B m"]) -> Float[Array, "B ..."]:
        """The minimum-norm least-squares solution ``A^+ y`` for each row."""
        y = v.require_floating(y, "y")
        if y.ndim != 2 or y.shape[1] != self.out_dim:
            raise ValueError(f"y must have shape [B, {self.out_dim}]; got {y.shape}")
        return (y @ jnp.linalg.pinv(self.matrix()).T.astype(y.dtype)).reshape(
            (y.shape[0], *self.in_shape)
        )


class MatrixOperator(LinearOperator):
    """A dense ``A`` ``[m, D]`` acting on flattened events of shape ``in_shape`` (default ``(D,)``)."""

    A: Float[Array, "m D"]

    def __init__(self, A: Float[ArrayLike, "m D"], in_shape: tuple[int, ...] | None = None):
        A = v.require_floating(A, "A")
        if A.ndim != 2:
            raise ValueError(f"A must be a matrix [m, D]; got shape {A.shape}")
        in_shape = (A.shape[1],) if in_shape is None else _shape_tuple(in_shape, "in_shape")
        if math.prod(in_shape) != A.shape[1]:
            raise ValueError(
                f"A has shape {A.shape}: {A.shape[1]} columns, but in_shape {in_shape} has "
                f"{math.prod(in_shape)} entries"
            )
        self.A = A
        self.in_shape = in_shape

    @property
    def out_dim(self) -> int:
        return self.A.shape[0]

    def _apply_flat(self, xf: Array) -> Array:
        return xf @ self.A.T.astype(xf.dtype)

    def _adjoint_flat(self, y: Array) -> Array:
        return y @ self.A.astype(y.dtype)

    def matrix(self) -> Array:
        return self.A

    def gram_solve(self, vec: Array, r2: Any, s2: Any) -> Array:
        A = self.A.astype(vec.dtype)
        gram = A @ A.T
        eye = jnp.eye(self.out_dim, dtype=vec.dtype)
        r2 = jnp.broadcast_to(jnp.asarray(r2, vec.dtype), (vec.shape[0],))
        mats = r2[:, None, None] * gram[None] + jnp.asarray(s2, vec.dtype) * eye[None]
        return jax.vmap(jnp.linalg.solve)(mats, vec)


class Inpainting(LinearOperator):
    """Observe the entries where ``mask`` is true: ``y = x[mask]`` (``m`` = number of true entries).

    ``mask`` is a concrete boolean array of the full event shape (e.g. ``[8, 8, 1]`` for digits).
    """

    indices: Array  # int32 [m], positions in the flattened event

    def __init__(self, mask: Bool[ArrayLike, "..."]):
        if v.is_concrete(mask):
            arr = np.asarray(mask)
        else:
            raise TypeError("mask must be concrete (not traced): it fixes the number m of pixels")
        if arr.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array; got dtype {arr.dtype}")
        if arr.ndim < 1:
            raise ValueError("mask must have the event shape (at least one axis)")
        if not arr.any():
            raise ValueError("mask observes nothing (no true entries)")
        self.in_shape = tuple(int(s) for s in arr.shape)
        self.indices = jnp.asarray(np.flatnonzero(arr.reshape(-1)), jnp.int32)

    @property
    def out_dim(self) -> int:
        return self.indices.shape[0]

    def mask(self) -> Bool[Array, "..."]:
        """The boolean mask of observed entries, of the event shape."""
        return jnp.zeros(self.in_dim, bool).at[self.indices].set(True).reshape(self.in_shape)

    def _apply_flat(self, xf: Array) -> Array:
        return jnp.take(xf, self.indices, axis=1)

    def _adjoint_flat(self, y: Array) -> Array:
        return jnp.zeros((y.shape[0], self.in_dim), y.dtype).at[:, self.indices].set(y)

    def matrix(self) -> Array:
        return jnp.eye(self.in_dim, dtype=jnp.result_type(float))[self.indices]

    def pinv(self, y: Float[ArrayLike, "B m"]) -> Float[Array, "B ..."]:
        return self.adjoint(y)  # A A^T = I

    def gram_solve(self, vec: Array, r2: Any, s2: Any) -> Array:
        return _scaled_identity_solve(vec, r2, s2)


class Identity(LinearOperator):
    """``y = x`` (flattened): denoising."""

    def __init__(self, in_shape: tuple[int, ...]):
        self.in_shape = _shape_tuple(in_shape, "in_shape")

    @property
    def out_dim(self) -> int:
        return self.in_dim

    def _apply_flat(self, xf: Array) -> Array:
        return xf

    def _adjoint_flat(self, y: Array) -> Array:
        return y

    def matrix(self) -> Array:
        return jnp.eye(self.in_dim, dtype=jnp.result_type(float))

    def pinv(self, y: Float[ArrayLike, "B m"]) -> Float[Array, "B ..."]:
        return self.adjoint(y)

    def gram_solve(self, vec: Array, r2: Any, s2: Any) -> Array:
        return _scaled_identity_solve(vec, r2, s2)


def _scaled_identity_solve(vec: Array, r2: Any, s2: Any) -> Array:
    r2 = jnp.asarray(r2, vec.dtype)
    if r2.ndim == 1:
        r2 = r2[:, None]
    return vec / (r2 + jnp.asarray(s2, vec.dtype))


def measure(
    key: PRNGKeyArray,
    operator: LinearOperator,
    x: Float[ArrayLike, "B ..."],
    noise_std: float,
) -> Float[Array, "B m"]:
    """Simulate ``y = A x + n`` with ``n ~ N(0, noise_std^2 I)`` for each row of ``x``."""
    y = operator.apply(x)
    noise_std = float(noise_std)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}")
    return y + noise_std * jax.random.normal(key, y.shape, y.dtype)
