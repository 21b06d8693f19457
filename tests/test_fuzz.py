"""Fuzzed inputs (hypothesis) to the functions users call with their own data.

Every case must either work (finite output wherever the inputs were finite, the right shape) or
raise ``ValueError``/``TypeError`` whose message names one of the arguments made bad, before any
work; none may hang (a 120 s alarm) or return NaN silently. Inputs: wrong shapes and ranks,
dtypes (int, bool, float16, bfloat16, float64, complex), NaN and inf, empty batches, t outside
the path's range, huge and tiny values, unknown names.

Known failures that need fixes in files this module's owner does not own are listed in
``KNOWN`` with the request that proposes the fix (``REQUEST`` lines in ``/work/coord/PLAN.md``);
each such case accepts the known wrong behaviour or the correct one, and ``KNOWN_SEEN`` counts
the cases that still showed the known one.

Example counts: the ``flowjax-fast`` hypothesis profile (default run) and ``flowjax-slow``
(``--runslow``), registered in ``tests/conftest.py``. ``FUZZ_CASES`` counts the cases tried.
"""

from __future__ import annotations

import collections
import signal
from contextlib import contextmanager

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import flowjax as fj
from flowjax import data as D
from flowjax import losses

FUZZ_CASES: collections.Counter = collections.Counter()
# sample/log_likelihood compile per case: a third of the profile's examples (8 fast, 60 slow)
COMPILING = settings(max_examples=max(4, settings.default.max_examples // 3))

PATHS = ("condot", "vp_linear", "vp_cosine", "subvp", "ve", "edm")
PREDICTIONS = ("velocity", "score", "eps", "x1", "v")
DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "int32": np.int32,
    "bool": np.bool_,
    "complex64": np.complex64,
}
VALUES = {  # (generator of values, whether they are finite)
    "normal": (lambda rng, shape: rng.standard_normal(shape), True),
    "huge": (lambda rng, shape: rng.choice([-1.0, 1.0], shape) * 1e30, True),
    "tiny": (lambda rng, shape: rng.standard_normal(shape) * 1e-30, True),
    "nan": (lambda rng, shape: np.where(rng.random(shape) < 0.5, np.nan, 1.0), False),
    "inf": (lambda rng, shape: np.where(rng.random(shape) < 0.5, np.inf, 1.0), False),
}


@contextmanager
def _alarm(seconds: int = 120):
    """Fail instead of hanging."""

    def handler(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _array(rng, shape, dtype_name: str, values: str) -> np.ndarray:
    fn, _ = VALUES[values]
    arr = np.asarray(fn(rng, shape), np.float64)
    dtype = DTYPES[dtype_name]
    if dtype in (np.int32, np.bool_):
        return (
            (np.nan_to_num(arr, posinf=1, neginf=-1) > 0).astype(dtype)
            if dtype == np.bool_
            else (np.clip(np.nan_to_num(arr), -1e9, 1e9).astype(dtype))
        )
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype)


LAST_ERROR = [""]  # the message of the error _outcome accepted last ("" if none)


def _outcome(test: str, fn, bad: set[str]):
    """Run ``fn``; an error must name one of ``bad`` (none expected when empty). Returns the result
    or ``None`` after an accepted error."""
    FUZZ_CASES[test] += 1
    LAST_ERROR[0] = ""
    try:
        with _alarm():
            out = fn()
            jax.block_until_ready(out)
    except (ValueError, TypeError) as err:
        msg = LAST_ERROR[0] = str(err)
        assert bad, f"unexpected error on valid input: {type(err).__name__}: {msg}"
        assert any(name in msg for name in bad), f"error does not name any of {sorted(bad)}: {msg}"
        return None
    return out


def _finite_where_finite(out, finite_rows: np.ndarray, what: str) -> None:
    """No NaN in rows whose inputs were finite (NaN input may propagate along its own row)."""
    arr = np.asarray(out, np.float64)
    if arr.size == 0:
        return
    rows = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
    bad = np.isnan(rows).any(axis=1) & finite_rows[: rows.shape[0]]
    assert not bad.any(), f"{what}: NaN from finite inputs in rows {np.flatnonzero(bad)[:8]}"


# ------------------------------------------------------------------ known failures

# Failures whose fix belongs to files this module's owner does not own (requests in
# /work/coord/PLAN.md). Each case accepts the known wrong behaviour or the correct one, so this
# module passes before and after the fix lands; KNOWN_SEEN counts the cases that still showed the
# known behaviour (printed at the end: a count of 0 under the slow profile means it is fixed).
KNOWN: set[str] = set()  # every request so far is fixed (listed below)
CONFIG_KNOWN = {
    ("training.num_steps", None): "TypeError '<' not supported (None passes the type check)",
    ("optim.lr", "nan"): "accepted",
    ("optim.lr", "inf"): "accepted",
    ("optim.name", "adamm"): "\"unknown optimizer 'adamm'\" without the key",
    ("optim.name", ""): "\"unknown optimizer ''\" without the key",
    ("sampling.num_samples", 0): "accepted",
    ("sampling.num_samples", -1): "accepted",
    ("model.dtype", "float8"): "TypeError \"data type 'float8' not understood\"",
    ("model.dtype", "int32"): "accepted",
}
# fixed (their known names are gone from KNOWN, so the old behaviour fails the test): R1 (convert
# at a singular end of the path names t), R3 (a loss on an empty batch names batch["x"]), R5
# (unparsable data set names get the unknown-name error), R6 (the config checks of CONFIG_KNOWN
# name their key), R7 (convert computes in the promoted dtype of t and the data), R2
# (log_likelihood on an empty batch names x), R4 (sample names a rank-1 shape and a NaN x_start)
KNOWN_SEEN: collections.Counter = collections.Counter()


def _known(name: str) -> None:
    assert name in KNOWN, name
    KNOWN_SEEN[name] += 1


def _singular(path_name: str, source: str, target: str, t: np.ndarray) -> bool:
    """Whether ``convert`` meets a zero alpha or beta at some of these times (where it may raise
    naming t, request R1, fixed)."""
    if source == target:
        return False
    ends = {"condot": (0.0, 1.0), "vp_cosine": (0.0,), "subvp": (1.0,)}.get(path_name, ())
    return bool(np.isin(np.asarray(t, np.float64), ends).any())


# ------------------------------------------------------------------ convert and paths


@st.composite
def convert_cases(draw):
    path_name = draw(st.sampled_from(PATHS))
    source = draw(st.sampled_from((*PREDICTIONS, "velo", "")))
    target = draw(st.sampled_from((*PREDICTIONS, "noise")))
    batch = draw(st.sampled_from((0, 1, 3)))
    dim = draw(st.sampled_from((1, 2)))
    x_shape = draw(st.sampled_from(((batch, dim), (batch, dim, 2), (batch + 1, dim), (dim,))))
    dtype = draw(st.sampled_from(tuple(DTYPES)))
    x_dtype = draw(st.sampled_from(("float32", dtype)))
    values = draw(st.sampled_from(tuple(VALUES)))
    t_kind = draw(st.sampled_from(("scalar", "vector", "wrong", "end")))
    t_value = draw(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))))
    return path_name, source, target, batch, dim, x_shape, dtype, x_dtype, values, t_kind, t_value


@given(convert_cases(), st.integers(0, 2**31 - 1))
# every run tries the known case R7 and the fixed R1 (a singular end of CondOT)
@example(
    ("condot", "velocity", "score", 3, 2, (3, 2), "float16", "float16", "normal", "vector", 0.5), 0
)
@example(("condot", "eps", "x1", 3, 2, (3, 2), "float32", "float32", "normal", "end", 0.5), 0)
def test_convert(case, seed):
    path_name, source, target, batch, dim, x_shape, dtype, x_dtype, values, t_kind, t_value = case
    rng = np.random.default_rng(seed)
    path = fj.paths.get_path(path_name)
    value = _array(rng, (batch, dim), dtype, values)
    x = _array(rng, x_shape, x_dtype, "normal")
    lo, hi = float(path.t_min), float(path.t_max)
    if t_kind == "scalar":
        t = np.float32(t_value)
    elif t_kind == "vector":
        t = rng.uniform(lo, hi, batch).astype(np.float32)
    elif t_kind == "wrong":
        t = np.full((batch + 2,), 0.5, np.float32)
    else:
        t = np.float32(rng.choice([lo, hi]))
    bad = set()
    if source not in PREDICTIONS:
        bad.add("source")
    if target not in PREDICTIONS:
        bad |= {"target"}
    if DTYPES[dtype] in (np.int32, np.bool_, np.complex64):
        bad.add("value")
    if DTYPES[x_dtype] in (np.int32, np.bool_, np.complex64):
        bad.add("x")
    if x_shape != (batch, dim):
        bad |= {"value", "x"}
    if np.dtype(DTYPES[dtype]) != np.dtype(DTYPES[x_dtype]):
        # tests run with strict dtype promotion (conftest): mixing float16 and float32 raises
        # there (users' default promotion converts); the message names the dtypes
        bad.add("dtype promotion")
    t_dtype_mixed = np.dtype(t.dtype) != np.dtype(DTYPES[dtype]) and "value" not in bad
    if t_dtype_mixed:
        bad.add("dtype promotion")  # request R7: until convert computes in t's and x's dtype
    t_arr = np.asarray(t, np.float64)
    if t_kind == "wrong" or not np.all((t_arr >= lo) & (t_arr <= hi)):
        bad.add("t")
    if _singular(path_name, source, target, t_arr):
        bad.add("t")  # undefined there for some conversions: an error naming t (R1, fixed)
    out = _outcome(
        "convert",
        lambda: fj.convert(value, source=source, target=target, path=path, x=x, t=t),
        bad,
    )
    if out is None:
        if t_dtype_mixed and "dtype promotion" in LAST_ERROR[0]:
            _known("convert_t_dtype_strict")
        return
    assert out.shape == value.shape
    finite_rows = np.isfinite(value.astype(np.float64)).reshape(batch, dim).all(axis=1)
    if values in ("huge",):  # overflow to inf is allowed; NaN only from inf - inf
        return
    _finite_where_finite(out, finite_rows, "convert")


@given(
    st.sampled_from(PATHS),
    st.sampled_from(("scalar", "vector", "matrix", "empty")),
    st.one_of(st.floats(-1.0, 2.0), st.sampled_from((float("nan"), float("inf")))),
    st.sampled_from(("float32", "float16", "bfloat16", "int32", "complex64")),
)
def test_path_methods(path_name, t_kind, t_value, dtype):
    path = fj.paths.get_path(path_name)
    lo, hi = float(path.t_min), float(path.t_max)
    t = {
        "scalar": np.asarray(t_value),
        "vector": np.linspace(lo, hi, 5),
        "matrix": np.full((2, 3), 0.5),
        "empty": np.zeros((0,)),
    }[t_kind]
    with np.errstate(over="ignore", invalid="ignore"):
        t = (
            t.astype(DTYPES[dtype])
            if dtype != "int32"
            else np.clip(np.nan_to_num(t), -1, 2).astype(np.int32)
        )
    t64 = np.asarray(t).astype(np.float64) if dtype != "complex64" else np.asarray(t).real
    in_range = bool(np.all((t64 >= lo) & (t64 <= hi)))
    x1 = np.ones((5, 2), np.float32)
    eps = np.zeros((5, 2), np.float32)
    for name, fn in {
        "coefficients": lambda: path.coefficients(t),
        "log_snr": lambda: path.log_snr(t),
        "interpolate": lambda: path.interpolate(x1, eps, t),
        "conditional_target": lambda: path.conditional_target("velocity", x1, eps, t),
    }.items():
        bad = set() if in_range and dtype != "complex64" else {"t"}
        if name in ("interpolate", "conditional_target") and t_kind in ("matrix",):
            bad.add("t")
        if name in ("interpolate", "conditional_target") and t_kind == "empty":
            bad.add("t")
        out = _outcome(f"path.{name}", fn, bad)
        if out is None or not in_range:
            continue
        for leaf in jax.tree.leaves(out):
            leaf = np.asarray(leaf, np.float64)
            # log-SNR is +-inf where alpha or beta is exactly 0 (documented); nothing is NaN
            assert not np.isnan(leaf).any(), (name, path_name, t)


# ------------------------------------------------------------------ losses


def _apply(params, x, t, label=None, *, train=True, key=None):
    # in x's dtype (the tests run with strict dtype promotion: float32 w with float16 x raises)
    return params["w"].astype(x.dtype) * x + t.astype(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


@given(
    st.sampled_from(PATHS),
    st.sampled_from((*PREDICTIONS, "noise")),
    st.sampled_from(("uniform", "velocity", "snr", "min_snr", "likelihood", "bogus")),
    st.sampled_from(("uniform", "logit_normal", "stratified", "antithetic", "sobol")),
    st.sampled_from(((4, 2), (0, 2), (4,), (3, 2, 2))),
    st.sampled_from(("float32", "float16", "bfloat16", "int32")),
    st.sampled_from(tuple(VALUES)),
    st.integers(0, 2**31 - 1),
)
@example("condot", "velocity", "uniform", "uniform", (0, 2), "float32", "normal", 0)  # R3
def test_make_loss(path_name, prediction, weighting, sampler, shape, dtype, values, seed):
    path = fj.paths.get_path(path_name)
    rng = np.random.default_rng(seed)
    x = _array(rng, shape, dtype, values)
    bad = set()
    if prediction not in PREDICTIONS:
        bad.add("prediction")
    if weighting == "bogus":
        bad.add("weighting")
    if sampler == "sobol":
        bad.add("time sampler")
    loss_fn = _outcome(
        "make_loss",
        lambda: losses.make_loss(
            _apply, path, prediction=prediction, weighting=weighting, time_sampler=sampler
        ),
        bad,
    )
    if loss_fn is None:
        return
    bad = set()
    if len(shape) < 2 or shape[0] == 0:
        bad.add('batch["x"]')  # an empty batch: R3, fixed
    if dtype == "int32":
        bad.add('batch["x"]')
    out = _outcome(
        "loss_fn",
        lambda: loss_fn({"w": jnp.float32(0.5)}, {"x": x}, jax.random.PRNGKey(seed % 1000)),
        bad,
    )
    if out is None:
        return
    loss, _ = out
    if VALUES[values][1] and values != "huge":
        assert np.isfinite(float(loss)), (path_name, prediction, weighting, sampler, dtype)


# ------------------------------------------------------------------ data


@given(
    name=st.sampled_from((*D.BUILTIN_DATASETS, "mnistt", "digit", "", "eight gaussians")),
    split=st.sampled_from(("train", "test", "validation", "all", "trian")),
    batch_size=st.integers(-3, 300),
    seed=st.integers(-1, 3),
)
@example(name="", split="train", batch_size=8, seed=0)  # R5
def test_get_dataset_and_make_iterator(name, split, batch_size, seed, tmp_path_factory):
    data_dir = str(tmp_path_factory.getbasetemp() / "no_tfds")
    bad = set()
    if name not in D.BUILTIN_DATASETS:
        bad |= {"data set", name or "''"}
    ds = None
    FUZZ_CASES["get_dataset"] += 1
    try:
        with _alarm():
            kw = {"num_examples": 500} if name in D.TOY_DATASETS and split != "all" else {}
            ds = D.get_dataset(name, split, data_dir=data_dir, **kw)
    except (ValueError, TypeError, FileNotFoundError) as err:
        msg = str(err)
        if "Parsing builder name string" in msg and name in ("", "eight gaussians"):
            _known("get_dataset_unparsable_name")  # request R5
            return
        named = [n for n in ("split", "data set", repr(name)) if n in msg]
        assert named, msg
        if name not in D.BUILTIN_DATASETS:
            assert "digits" in msg, msg  # the built-in list is given
        return
    bad = set()
    if batch_size <= 0:
        bad.add("global_batch_size")
    if seed < 0:
        bad.add("seed")
    it = _outcome(
        "make_iterator",
        lambda: D.make_iterator(ds, global_batch_size=batch_size, seed=seed),
        bad,
    )
    if it is None:
        return
    if batch_size > len(ds):
        _outcome("make_iterator.next", lambda: next(it), {"global_batch_size", "batch"})
        return
    batch = next(it)
    assert batch["x"].shape[0] == batch_size and np.isfinite(batch["x"]).all()


# ------------------------------------------------------------------ experiments' config


@given(
    entry=st.sampled_from(
        (
            ("training.num_steps", (-5, -1, 2.5, "10", None)),  # 0 is valid (no training)
            ("training.batch_size", (0, -8, 7.5, "64")),
            ("optim.lr", (-1.0, float("nan"), float("inf"), "fast")),  # 0 is valid (frozen)
            ("optim.name", ("adamm", "", 3)),
            ("path.name", ("cond_ot", "VP", "")),
            ("loss.prediction", ("noise", "Velocity")),
            ("loss.t_margin", (-0.1, 0.6, float("nan"))),
            ("data.name", ("mnistt", "digit")),
            ("model.name", ("transformer", "")),
            ("sampling.num_samples", (0, -1)),
            ("training.remat", ("all",)),
            ("model.dtype", ("float8", "int32")),
        )
    ),
    index=st.integers(0, 4),
)
@example(entry=("optim.name", ("adamm", "", 3)), index=0)  # R6
def test_config_overrides(entry, index, tmp_path_factory):
    from experiments import train as xt
    from experiments.configs import default

    key, candidates = entry
    value = candidates[index % len(candidates)]
    cfg = default.get_config("local")
    section, name = key.rsplit(".", 1)
    node = cfg
    for part in section.split("."):
        node = node[part]
    FUZZ_CASES["config"] += 1
    known = (key, str(value) if isinstance(value, float) else value) in CONFIG_KNOWN
    try:
        with _alarm():
            node[name] = value
            xt.setup(cfg, tmp_path_factory.mktemp("wd"))
    except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
        if known and not (name in str(err) or key in str(err)):
            _known("config_checks_missing")  # request R6: rejected, without naming the key
            return
        assert name in str(err) or key in str(err), f"{key}={value!r}: {err}"
        return
    if known:
        _known("config_checks_missing")  # request R6: accepted
        return
    pytest.fail(f"{key}={value!r} was accepted")


# ------------------------------------------------------------------ sample and log_likelihood

_MIX = fj.oracle.eight_gaussians()


@given(
    st.sampled_from(("condot", "vp_linear", "ve")),
    st.sampled_from((*PREDICTIONS, "noise")),
    st.sampled_from(("euler", "heun", "dopri5", "rk4x")),
    st.sampled_from((3, 1, 0, -2, 2.5)),  # a valid value first: hypothesis starts from it
    st.sampled_from(((4, 2), (0, 2), (4, 3), (2,))),
    st.sampled_from((None, -0.5, 0.2, 1.5, float("nan"))),
    st.sampled_from((None, 0.9, 2.0)),
    st.sampled_from(("none", "good", "nan", "shape", "int")),
)
@example("condot", "velocity", "euler", 3, (4, 2), None, None, "nan")  # R4: NaN x_start
@example("condot", "velocity", "euler", 3, (2,), None, None, "none")  # R4: a rank-1 shape
@COMPILING
def test_sample(path_name, prediction, solver, num_steps, shape, t_start, t_end, x_start):
    path = fj.paths.get_path(path_name)
    model = _MIX.model_fn(path, prediction if prediction in PREDICTIONS else "velocity")
    bad = set()
    if prediction not in PREDICTIONS:
        bad.add("prediction")
    if solver == "rk4x":
        bad.add("solver")
    if not isinstance(num_steps, int) or num_steps < 1:
        bad.add("num_steps")
    if len(shape) != 2 or shape[1] != 2:
        bad |= {"shape", "model"}
    if len(shape) == 1:
        bad.add("x must have a leading batch axis")  # the known message (R4) or "shape"
    if shape[0] == 0:
        bad.add("shape")
    lo, hi = float(path.t_min), float(path.t_max)
    for name, value in (("t_start", t_start), ("t_end", t_end)):
        if value is not None and not lo <= value <= hi:
            bad.add(name)
    xs = {
        "none": None,
        "good": np.ones(shape, np.float32),
        "nan": np.full(shape, np.nan, np.float32),
        "shape": np.ones((5, 2), np.float32),
        "int": np.ones(shape, np.int32),
    }[x_start]
    known_nan = x_start == "nan" and not bad
    if x_start == "nan":
        bad.add("x_start")
    if x_start in ("shape", "int"):
        bad.add("x_start")
    out = _outcome(
        "sample",
        lambda: fj.sample(
            model,
            path,
            jax.random.PRNGKey(0),
            shape,
            prediction=prediction,
            solver=solver,
            num_steps=num_steps,
            t_start=t_start,
            t_end=t_end,
            x_start=xs,
        ),
        bad,
    )
    if out is None:
        if len(shape) == 1 and "x must have a leading batch axis" in LAST_ERROR[0]:
            _known("sample_rank1_shape_names_x")  # request R4
        return
    assert out.samples.shape == shape
    if known_nan:  # request R4: NaN x_start gives NaN samples silently (until it names x_start)
        assert np.isnan(np.asarray(out.samples)).all()
        _known("sample_nan_x_start")
        return
    _finite_where_finite(out.samples, np.ones(shape[0], bool), "sample")


@given(
    st.sampled_from(("condot", "vp_linear")),
    st.sampled_from((*PREDICTIONS, "noise")),
    st.sampled_from(("dopri5", "euler", "rk4x")),
    st.sampled_from(((3, 2), (0, 2), (3, 3), (2,))),
    st.sampled_from(("normal", "huge", "nan", "int")),
)
@example("condot", "velocity", "dopri5", (0, 2), "normal")  # R2: an empty batch
@COMPILING
def test_log_likelihood(path_name, prediction, solver, shape, values):
    path = fj.paths.get_path(path_name)
    model = _MIX.model_fn(path, prediction if prediction in PREDICTIONS else "velocity")
    rng = np.random.default_rng(0)
    x = _array(
        rng,
        shape,
        "int32" if values == "int" else "float32",
        values if values != "int" else "normal",
    )
    bad = set()
    if prediction not in PREDICTIONS:
        bad.add("prediction")
    if solver == "rk4x":
        bad.add("solver")
    if len(shape) != 2 or shape[1] != 2:
        bad |= {"x", "model"}
    if shape[0] == 0 and len(shape) == 2 and shape[1] == 2 and prediction in PREDICTIONS:
        # an empty result or a ValueError naming x; until request R2, a ZeroDivisionError
        try:
            out = _outcome(
                "log_likelihood",
                lambda: fj.likelihood.log_likelihood(model, path, x, prediction=prediction),
                {"x"},
            )
        except ZeroDivisionError:
            _known("log_likelihood_empty_batch")
            return
        if out is not None:
            chex.assert_shape(out.log_prob, (0,))
        return
    if shape[0] == 0:
        bad.add("x")
    if values in ("nan", "int"):
        bad.add("x")
    out = _outcome(
        "log_likelihood",
        lambda: fj.likelihood.log_likelihood(
            model,
            path,
            x,
            prediction=prediction,
            solver=solver,
            num_steps=8 if solver == "euler" else None,
        ),
        bad,
    )
    if out is None:
        return
    assume(values != "huge")
    _finite_where_finite(out.log_prob, np.ones(shape[0], bool), "log_likelihood")


@pytest.fixture(scope="module", autouse=True)
def _report_cases():
    """Print how many cases each fuzz test tried (shown with -s), after the module's tests."""
    yield
    print("\nFUZZ_CASES", dict(FUZZ_CASES), "total", sum(FUZZ_CASES.values()))
    print("KNOWN_SEEN", dict(KNOWN_SEEN))
