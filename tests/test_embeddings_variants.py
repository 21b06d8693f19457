"""jit and non-jit variants of the small pure functions of models and likelihood.

The time and class embeddings of :mod:`flowjax.models` and the divergence estimators of
:mod:`flowjax.likelihood` run under ``chex.variants`` with the same assertions, against closed forms
written here.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from flowjax import likelihood as LK
from flowjax import models as M


class EmbeddingsUnderJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True, with_device=True)
    def test_sinusoidal_embedding(self):
        t = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
        emb = self.variant(lambda t: M.sinusoidal_embedding(t, 8, scale=10.0, max_period=100.0))(t)
        freqs = 100.0 ** (-np.arange(4) / 4)
        args = 10.0 * t[:, None] * freqs[None, :]
        chex.assert_shape(emb, (4, 8))
        chex.assert_type(emb, jnp.float32)
        chex.assert_trees_all_close(emb, np.concatenate([np.cos(args), np.sin(args)], 1), atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True, with_device=True)
    def test_fourier_embedding(self):
        t = np.linspace(0.0, 1.0, 5, dtype=np.float32)
        emb = self.variant(lambda t: M.fourier_embedding(t, 6, scale=2.0, seed=1))(t)
        chex.assert_shape(emb, (5, 6))
        sin, cos = np.asarray(emb[:, :3]), np.asarray(emb[:, 3:])
        chex.assert_trees_all_close(sin**2 + cos**2, np.ones((5, 3)), atol=1e-5)
        chex.assert_trees_all_close(emb[0], np.r_[np.zeros(3), np.ones(3)], atol=1e-6)
        # the frequencies are fixed by the seed: t = 1 gives angles 2 pi w, w ~ N(0, 2^2)
        w = np.random.default_rng(1).normal(0.0, 2.0, 3)
        chex.assert_trees_all_close(
            emb[-1], np.r_[np.sin(2 * math.pi * w), np.cos(2 * math.pi * w)], atol=1e-4
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("sinusoidal", "sinusoidal"), ("fourier", "fourier"))
    def test_embedding_modules(self, kind):
        module = M.SinusoidalEmbedding(16) if kind == "sinusoidal" else M.FourierEmbedding(16)
        t = jnp.linspace(0.0, 1.0, 3)
        params = module.init(jax.random.PRNGKey(0), t)
        emb = self.variant(lambda p, t: module.apply(p, t))(params, t)
        direct = (
            M.sinusoidal_embedding(t, 16) if kind == "sinusoidal" else M.fourier_embedding(t, 16)
        )
        chex.assert_shape(emb, (3, 16))
        chex.assert_trees_all_close(emb, direct, rtol=1e-6)
        # a scalar t is one example
        chex.assert_shape(
            self.variant(lambda p, t: module.apply(p, t))(params, jnp.float32(0.5)), (1, 16)
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_class_embedding(self):
        module = M.ClassEmbedding(num_classes=3, dim=4)
        labels = jnp.array([0, 2, 3], jnp.int32)  # 3 is the null label
        params = module.init(jax.random.PRNGKey(0), labels, 3)
        table = np.asarray(params["params"]["Embed_0"]["embedding"])
        chex.assert_shape(table, (4, 4))
        emb = self.variant(lambda p, lab: module.apply(p, lab, 3))(params, labels)
        chex.assert_trees_all_close(emb, table[[0, 2, 3]])
        null = self.variant(lambda p: module.apply(p, None, 2))(params)
        chex.assert_trees_all_close(null, table[[3, 3]])


def _linear_field(W, b):
    return lambda x: jnp.tanh(W @ x.ravel() + b).reshape(x.shape)


class DivergenceUnderJit(chex.TestCase):
    """exact_divergence and hutchinson_divergence against the trace of a Jacobian written here."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.W = rng.normal(size=(6, 6)).astype(np.float32) / 3
        self.b = rng.normal(size=6).astype(np.float32)
        self.x = rng.normal(size=(2, 3)).astype(np.float32)
        # f(x) = tanh(W x + b): Jacobian diag(1 - tanh^2) W, trace sum_i (1 - tanh_i^2) W_ii
        h = np.tanh(self.W @ self.x.ravel() + self.b)
        self.f_ref, self.div_ref = h.reshape(2, 3), float(np.sum((1 - h**2) * np.diag(self.W)))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("all", None), ("chunk4", 4), ("chunk1", 1))
    def test_exact_divergence(self, chunk):
        f = _linear_field(self.W, self.b)
        fx, div = self.variant(lambda x: LK.exact_divergence(f, x, chunk=chunk))(self.x)
        chex.assert_shape(fx, (2, 3))
        chex.assert_shape(div, ())
        chex.assert_trees_all_close((fx, div), (self.f_ref, self.div_ref), rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hutchinson_divergence(self):
        f = _linear_field(self.W, self.b)
        # the 6 signed basis vectors sqrt(6) e_i are a probe set whose mean estimate is exact;
        # Rademacher probes: each estimate is v^T J v, checked against the Jacobian written here
        basis = np.sqrt(6.0) * np.eye(6, dtype=np.float32).reshape(6, 2, 3)
        probes = np.asarray(jax.random.rademacher(jax.random.PRNGKey(0), (5, 2, 3), jnp.float32))
        run = self.variant(lambda x, v: LK.hutchinson_divergence(f, x, v))
        fx, est = run(self.x, basis)
        chex.assert_shape(est, (6,))
        chex.assert_trees_all_close((fx, est.mean()), (self.f_ref, self.div_ref), rtol=1e-5)
        h = np.tanh(self.W @ self.x.ravel() + self.b)
        J = (1 - h**2)[:, None] * self.W
        _, est = run(self.x, probes)
        flat = probes.reshape(5, 6)
        chex.assert_trees_all_close(
            est, np.einsum("ki,ij,kj->k", flat, J, flat), rtol=1e-5, atol=1e-5
        )
