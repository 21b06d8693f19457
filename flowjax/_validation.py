"""Input validation shared by every module.

Two kinds of check:

* **Trace-time checks** (shapes, dtypes, names) are plain Python: they run while a function is
  traced, cost nothing at run time and raise ``ValueError``/``TypeError`` naming the argument.
* **Value checks** (``t`` inside the path's range, finite inputs) need the values, which a traced
  function does not have. They are inserted only in *checked mode* (``flowjax.checking()``) as
  ``jax.experimental.checkify`` checks; ``flowjax.checked(fn)`` turns them on, functionalizes them and
  raises on failure. Concrete (non-traced) inputs are checked eagerly where that is cheap.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("flowjax_checks", default=False)


def checks_enabled() -> bool:
    """Whether value checks are inserted into functions traced now."""
    return _CHECKS.get()


@contextlib.contextmanager
def checking(enabled: bool = True) -> Iterator[None]:
    """Context in which flowjax inserts checkify value checks into what it traces.

    Functions traced inside must be functionalized with ``jax.experimental.checkify.checkify``;
    :func:`checked` does both.
    """
    token = _CHECKS.set(enabled)
    try:
        yield
    finally:
        _CHECKS.reset(token)


def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so that flowjax's value checks run and raise ``JaxRuntimeError`` on failure.

    A debugging aid: ``fn`` may itself be (or call) ``jax.jit``-compiled functions, whose cached
    traces would not hold the checks, so JAX's compilation caches are cleared before and after the
    call and everything inside is traced afresh.

    Example::

        flowjax.checked(path.coefficients)(jnp.array(1.5))   # raises: t outside [0, 1]
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        jax.clear_caches()
        try:
            with checking(True):
                err, out = checkify.checkify(fn, errors=checkify.user_checks)(*args, **kwargs)
        finally:
            jax.clear_caches()
        err.throw()
        return out

    return wrapper


def check_value(pred: Any, msg: str, *fmt_args: Any) -> None:
    """A checkify check that is only inserted in checked mode (see :func:`checking`)."""
    if _CHECKS.get():
        checkify.check(pred, msg, *fmt_args)


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def concrete_float(fn: Callable[[], Any]) -> float | None:
    """``float(fn())`` if it can be evaluated now, else ``None`` (e.g. a traced path's value)."""
    try:
        # evaluated now even inside a caller's jit (a path's fields are constants there too)
        with jax.ensure_compile_time_eval():
            val = fn()
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None
    return float(np.asarray(val)) if is_concrete(val) else None


def choice(value: str, valid: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a ValueError listing them."""
    if value not in valid:
        raise ValueError(
            f"unknown {what} {value!r}; valid choices are: {', '.join(map(str, valid))}"
        )
    return value


def as_float_array(x: Any, name: str) -> jax.Array:
    """``jnp.asarray(x)`` promoted to the default float type if it is an integer or bool."""
    arr = jnp.asarray(x)
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real floating point, got dtype {arr.dtype}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def require_floating(x: Any, name: str) -> jax.Array:
    """Check that ``x`` is a floating-point array (data must not be silently cast from ints)."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {arr.dtype} with shape {arr.shape}"
        )
    return arr


def require_batched(x: jax.Array | np.ndarray, name: str, min_ndim: int = 1) -> None:
    """Check that ``x`` has a leading batch axis (at least ``min_ndim`` dimensions)."""
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have a leading batch axis and at least {min_ndim} dimension(s) "
            f"[B, ...]; got shape {x.shape}"
        )


def require_same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    """Check that two arrays have one shape, naming both in the error."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match"
        )


def batch_time(t: Any, x: jax.Array, *, t_name: str = "t", x_name: str = "x") -> jax.Array:
    """Validate ``t`` against batched ``x`` and reshape it to broadcast over ``x``.

    Args:
      t: scalar or shape ``[B]`` with ``B = x.shape[0]``.
      x: array of shape ``[B, ...]``.

    Returns:
      ``t`` with shape ``[]`` or ``[B, 1, ..., 1]`` (``x.ndim`` axes), in a float dtype.
    """
    t = as_float_array(t, t_name)
    require_batched(x, x_name)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{t_name} must be a scalar or have shape [B] = ({x.shape[0]},) to match {x_name} of "
            f"shape {x.shape}; got {t_name} with shape {t.shape}"
        )
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


def promote(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """Cast ``arrays`` to their common dtype by JAX's standard promotion lattice.

    The result dtype is what ``jax_numpy_dtype_promotion="standard"`` would give, and it also
    holds under ``"strict"`` (where e.g. a float16 ``t`` times a float32 ``x`` raises).
    """
    with jax.numpy_dtype_promotion("standard"):
        dtype = functools.reduce(jnp.promote_types, (a.dtype for a in arrays))
    return tuple(a.astype(dtype) for a in arrays)


def check_time_range(t: jax.Array | np.ndarray, t_min: Any, t_max: Any, name: str = "t") -> None:
    """Check ``t_min <= t <= t_max`` (eagerly for concrete ``t``, in checked mode otherwise)."""
    if is_concrete(t) and is_concrete(t_min) and is_concrete(t_max):
        tt = np.asarray(t)
        if tt.size and (np.any(~(tt >= np.asarray(t_min))) or np.any(~(tt <= np.asarray(t_max)))):
            bad = tt[~((tt >= np.asarray(t_min)) & (tt <= np.asarray(t_max)))]
            raise ValueError(
                f"{name} must lie in the path's valid range [{float(t_min)}, {float(t_max)}]; "
                f"got {bad.ravel()[:8].tolist()}"
            )
        return
    check_value(
        jnp.all((t >= t_min) & (t <= t_max)),
        f"{name} must lie in the path's valid range [{{}}, {{}}]; got min {{}} and max {{}}",
        jnp.asarray(t_min),
        jnp.asarray(t_max),
        jnp.min(t),
        jnp.max(t),
    )


def check_finite(x: jax.Array | np.ndarray, name: str) -> None:
    """Check that ``x`` holds no NaN/inf; names the offending rows of a concrete batch."""
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.size and not np.all(np.isfinite(arr)):
            rows = bad_rows(arr)
            raise ValueError(
                f"{name} contains NaN or infinite values in row(s) {rows[:16]}"
                + (f" and {len(rows) - 16} more" if len(rows) > 16 else "")
            )
        return
    check_value(jnp.all(jnp.isfinite(x)), f"{name} contains NaN or infinite values")


def bad_rows(arr: np.ndarray) -> list[int]:
    """Indices along axis 0 of the rows of ``arr`` that hold a NaN or infinity."""
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)) if arr.ndim else np.isfinite(arr)[None]
    return [int(i) for i in np.flatnonzero(~finite.all(axis=1))]
