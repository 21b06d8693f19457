"""Guidance: classifier-free and classifier guidance against the Gaussian-mixture oracle.

Ground truth. The mixture's components are the classes. The class-conditional distribution of class
``k`` is component ``k``; the Bayes classifier of data is the oracle's responsibilities at ``t = 1``.
The mixture here overlaps (eight Gaussians of std 0.5 on a circle of radius 1.5), so the exact
conditional is classified to its own class only ~75% of the time: guidance at ``w = 1`` must
reproduce that rate, ``w = 0`` must give chance (1/8), ``w > 1`` more than the conditional.

Statistics as in ``test_sampling_quality.py``: an energy distance passes below ``m + 4 s`` of the
finite-sample floor; rates pass within 4 binomial standard errors. Keys are fixed.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import guidance as G
from flowjax import models as M
from flowjax import training as T
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.oracle import eight_gaussians
from flowjax.sampling import guided_model, sample


def make_mix():
    """The mixture, built in the current precision (float64 inside the ``x64`` fixture)."""
    return eight_gaussians(radius=1.5, std=0.5)


MIX = make_mix()
K = MIX.num_components
PATH = fj.CondOT()
N = 2000
SIGMAS = 4.0
ODE = dict(solver="heun", num_steps=100)

_ed = jax.jit(energy_distance)


def bayes_class(x):
    """The oracle's Bayes classifier of data points (responsibilities at t = 1)."""
    return jnp.argmax(MIX.responsibilities(PATH, x, 1.0), axis=-1)


@pytest.fixture(scope="module")
def floors():
    comp = MIX.component(2)
    mc, sc = finite_sample_floor(_ed, comp.sample, jax.random.PRNGKey(10), N, 10)
    mu, su = finite_sample_floor(_ed, MIX.sample, jax.random.PRNGKey(11), N, 10)
    return {
        "cond": (float(mc + SIGMAS * sc), comp.sample(jax.random.PRNGKey(12), N)),
        "uncond": (float(mu + SIGMAS * su), MIX.sample(jax.random.PRNGKey(13), N)),
    }


@pytest.fixture(scope="module")
def exact_rate():
    """P(Bayes classifier says k | x ~ component k), by Monte Carlo with 400k exact draws."""
    x, lab = MIX.sample_with_labels(jax.random.PRNGKey(20), 400_000)
    return float(jnp.mean(bayes_class(x) == lab))


# ------------------------------------------------------------------ classifier-free guidance


@pytest.mark.parametrize(
    "path, prediction, kw",
    [
        (fj.CondOT(), "velocity", ODE),
        (fj.VPLinear(), "eps", dict(method="sde", num_steps=1000)),
    ],
    ids=["condot-velocity-ode", "vp-eps-reverse-sde"],
)
def test_cfg_w1_is_the_class_conditional_and_w0_the_unconditional(floors, path, prediction, kw):
    model = G.conditional_oracle(MIX, path, prediction)
    labels = jnp.full((N,), 2, jnp.int32)

    def run(w):
        guided = guided_model(model, labels, jnp.int32(K), w)
        return sample(guided, path, jax.random.PRNGKey(1), (N, 2), prediction=prediction,
                      **kw).samples  # fmt: skip

    w1, w0 = run(1.0), run(0.0)
    cond_tol, cond_ref = floors["cond"]
    unc_tol, unc_ref = floors["uncond"]
    d11, d00 = float(_ed(w1, cond_ref)), float(_ed(w0, unc_ref))
    assert d11 < cond_tol, (d11, cond_tol)
    assert d00 < unc_tol, (d00, unc_tol)
    # negative controls: the check can tell the two apart
    assert float(_ed(w0, cond_ref)) > 20 * cond_tol
    assert float(_ed(w1, unc_ref)) > 20 * unc_tol


def test_cfg_classification_rate_matches_the_exact_conditional(exact_rate):
    n = 4000
    labels = jnp.arange(n, dtype=jnp.int32) % K
    model = G.conditional_oracle(MIX, PATH)
    rates = {}
    for w in (0.0, 1.0, 3.0):
        x = sample(guided_model(model, labels, jnp.int32(K), w), PATH, jax.random.PRNGKey(1),
                   (n, 2), **ODE).samples  # fmt: skip
        hit = np.asarray(bayes_class(x) == labels)
        rates[w] = hit.mean()
        if w == 1.0:
            se = np.sqrt(exact_rate * (1 - exact_rate) / n)
            assert abs(rates[w] - exact_rate) < SIGMAS * se, (rates[w], exact_rate, se)
            se_k = np.sqrt(exact_rate * (1 - exact_rate) / (n // K))
            for k in range(K):  # each class separately
                rate_k = hit[np.asarray(labels) == k].mean()
                assert abs(rate_k - exact_rate) < SIGMAS * se_k, (k, rate_k, exact_rate)
    assert 0.6 < exact_rate < 0.9  # the mixture overlaps: the rate is informative
    assert abs(rates[0.0] - 1 / K) < SIGMAS * np.sqrt(1 / K * (1 - 1 / K) / n)  # chance
    assert rates[3.0] > exact_rate + 0.1  # w > 1 sharpens towards the class


# ------------------------------------------------------------------ classifier guidance


def test_oracle_classifier_is_the_bayes_classifier(x64):
    mix = make_mix()
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (32, 2))
    t = jnp.linspace(0.02, 0.98, 32)
    for path in (fj.CondOT(), fj.VPLinear(), fj.VE()):
        clf = G.oracle_classifier(mix, path)
        chex.assert_trees_all_close(
            jax.nn.softmax(clf(x, t)), mix.responsibilities(path, x, t), rtol=1e-10, atol=1e-13
        )


@pytest.mark.parametrize("path_name", ["condot", "vp_linear", "ve"])
def test_classifier_guidance_with_exact_parts_is_exact(x64, path_name):
    """score + w grad log p_t(y|x) equals classifier-free guidance at every w and, at w = 1, the
    conditional oracle, in every parameterization (pointwise, float64)."""
    path, mix = fj.get_path(path_name), make_mix()
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (16, 2))
    t = jnp.linspace(0.05, 0.95, 16)
    labels = jnp.arange(16, dtype=jnp.int32) % K
    clf = G.oracle_classifier(mix, path)
    for prediction in fj.PREDICTIONS:
        cond_model = G.conditional_oracle(mix, path, prediction)
        for w in (0.0, 1.0, 2.5):
            cg = G.classifier_guided(mix.model_fn(path, prediction), clf, labels, scale=w,
                                     path=path, prediction=prediction)  # fmt: skip
            cfg = guided_model(cond_model, labels, jnp.int32(K), w)
            chex.assert_trees_all_close(cg(x, t), cfg(x, t), rtol=1e-8, atol=1e-8)
            if w == 1.0:
                exact = mix.predict(prediction, path, x, t, labels)
                chex.assert_trees_all_close(cg(x, t), exact, rtol=1e-8, atol=1e-8)


def test_classifier_guided_sampling_reproduces_the_conditional(floors):
    labels = jnp.full((N,), 2, jnp.int32)
    cg = G.classifier_guided(MIX.model_fn(PATH), G.oracle_classifier(MIX, PATH), labels,
                             scale=1.0, path=PATH)  # fmt: skip
    x = sample(cg, PATH, jax.random.PRNGKey(3), (N, 2), **ODE).samples
    tol, ref = floors["cond"]
    assert float(_ed(x, ref)) < tol


def test_add_score_term_drops_only_undefined_terms():
    path = fj.CondOT()
    x = jnp.ones((3, 2))
    term = jnp.full((3, 2), 0.5)
    t = jnp.array([0.0, 0.5, 1.0])
    out = G.add_score_term(jnp.zeros((3, 2)), term, prediction="velocity", path=path, t=t)
    # velocity = a_t score + b_t x with a_t = (1-t)/t: infinite at t = 0 (dropped), 0 at t = 1
    chex.assert_trees_all_close(out, np.asarray([[0, 0], [0.5, 0.5], [0, 0]]), rtol=1e-7, atol=1e-7)
    out = G.add_score_term(jnp.zeros((3, 2)), jnp.full((3, 2), jnp.inf), prediction="velocity",
                           path=path, t=jnp.array([1.0, 1.0, 1.0]))  # fmt: skip
    np.testing.assert_array_equal(out, 0.0)
    eps = G.add_score_term(jnp.zeros((3, 2)), term, prediction="eps", path=path, t=t)
    chex.assert_trees_all_close(
        eps, -path.beta(t)[:, None] * term, rtol=1e-7, atol=1e-7
    )  # eps = -beta score
    del x


def test_classifier_guidance_start_switches_the_term_off_before_it():
    model = MIX.model_fn(PATH)
    clf = G.oracle_classifier(MIX, PATH)
    labels = jnp.array([2, 2, 5])
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    t = jnp.array([0.2, 0.6, 0.9])
    late = G.classifier_guided(model, clf, labels, scale=2.0, path=PATH, guidance_start=0.5)
    always = G.classifier_guided(model, clf, labels, scale=2.0, path=PATH)
    out, base, full = late(x, t), model(x, t), always(x, t)
    chex.assert_trees_all_close(out[0], base[0], rtol=1e-7, atol=1e-6)  # t < start: the prior alone
    chex.assert_trees_all_close(out[1:], full[1:], rtol=1e-7, atol=1e-6)  # t >= start: guided
    assert float(jnp.min(jnp.abs(full[1:] - base[1:]))) > 1e-3
    with pytest.raises(ValueError, match="guidance_start must be a scalar"):
        G.classifier_guided(model, clf, labels, path=PATH, guidance_start=jnp.ones(2))


# ------------------------------------------------------------------ a learned classifier


@pytest.mark.slow  # ~20 s; the mechanism is tested with the exact classifier above
def test_learned_classifier_approaches_bayes_and_guides(exact_rate):
    """A small time-dependent Classifier trained by make_classifier_loss through flowjax.training
    reaches (within 3 points) the Bayes accuracy on noisy points, and guiding the exact
    unconditional model with it at w = 1 gives about the exact conditional classification rate."""
    clf_model = M.Classifier(K, hidden=(64, 64))
    params = M.init(clf_model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    loss_fn = G.make_classifier_loss(M.make_apply_fn(clf_model), PATH, num_classes=K)
    steps, bs = 400, 512
    opt = T.make_optimizer("adam", 5e-3, schedule="cosine", total_steps=steps)
    step = T.make_train_step(loss_fn, opt, mesh=fj.parallel.make_mesh(), ema_decay=None)
    state = T.create_train_state(params, opt, jax.random.PRNGKey(1), ema=False)
    x, lab = MIX.sample_with_labels(jax.random.PRNGKey(2), steps * bs)
    x, lab = np.asarray(x, np.float32), np.asarray(lab, np.int32)
    for i in range(steps):
        state, metrics = step(
            state, {"x": x[i * bs : (i + 1) * bs], "label": lab[i * bs : (i + 1) * bs]}
        )
    assert np.isfinite(float(metrics["cross_entropy"]))
    clf = M.model_fn(clf_model, state.params)

    @jax.jit
    def accuracies(clf, key):
        k1, k2, k3 = jax.random.split(key, 3)
        xe, le = MIX.sample_with_labels(k1, 20_000)
        t = jax.random.uniform(k2, (20_000,))
        xt = PATH.interpolate(xe, jax.random.normal(k3, xe.shape), t)
        acc = jnp.mean(jnp.argmax(clf(xt, t), -1) == le)
        return acc, jnp.mean(jnp.argmax(MIX.responsibilities(PATH, xt, t), -1) == le)

    acc, bayes = map(float, accuracies(clf, jax.random.PRNGKey(3)))
    assert acc > bayes - 0.03, (acc, bayes)

    labels = jnp.arange(2000, dtype=jnp.int32) % K
    cg = G.classifier_guided(MIX.model_fn(PATH), clf, labels, scale=1.0, path=PATH)
    xs = sample(cg, PATH, jax.random.PRNGKey(6), (2000, 2), solver="heun", num_steps=50).samples
    rate = float(jnp.mean(bayes_class(xs) == labels))
    print(f"learned classifier: noisy accuracy {acc:.4f} (Bayes {bayes:.4f}); guided rate at w=1 "
          f"{rate:.4f} (exact conditional {exact_rate:.4f})")  # fmt: skip
    assert abs(rate - exact_rate) < 0.05, (rate, exact_rate)


@pytest.mark.slow
def test_cfg_end_to_end_with_label_dropout(exact_rate):
    """A class-conditional MLP trained with label dropout (one network, both predictions): guided
    sampling at w = 0, 1, 3 gives chance, about the exact conditional rate, and more."""
    from flowjax import losses as L

    model = M.MLP(hidden=(256, 256, 256), num_classes=K)
    params = M.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    base = L.make_loss(M.make_apply_fn(model), PATH, num_classes=K, label_dropout=0.2)

    def loss_fn(p, batch, key):  # make_loss reports "loss" in aux, a name the train step reserves
        loss, aux = base(p, batch, key)
        return loss, {k: val for k, val in aux.items() if k != "loss"}

    steps, bs = 4000, 256
    opt = T.make_optimizer("adam", 2e-3, schedule="cosine", total_steps=steps)
    step = T.make_train_step(loss_fn, opt, mesh=fj.parallel.make_mesh(), ema_decay=None)
    state = T.create_train_state(params, opt, jax.random.PRNGKey(1), ema=False)
    x, lab = MIX.sample_with_labels(jax.random.PRNGKey(2), steps * bs)
    x, lab = np.asarray(x, np.float32), np.asarray(lab, np.int32)
    for i in range(steps):
        state, _ = step(state, {"x": x[i * bs : (i + 1) * bs], "label": lab[i * bs : (i + 1) * bs]})
    fn = M.model_fn(model, state.params)
    n = 4000
    labels = jnp.arange(n, dtype=jnp.int32) % K
    rates = {}
    for w in (0.0, 1.0, 3.0):
        xs = sample(guided_model(fn, labels, jnp.int32(K), w), PATH, jax.random.PRNGKey(3),
                    (n, 2), **ODE).samples  # fmt: skip
        rates[w] = float(jnp.mean(bayes_class(xs) == labels))
    print("trained CFG rates", rates, "exact", exact_rate)
    assert abs(rates[0.0] - 1 / K) < 0.03
    assert abs(rates[1.0] - exact_rate) < 0.05
    assert rates[3.0] > rates[1.0] + 0.1


# ------------------------------------------------------------------ bad input


def test_bad_labels_and_arguments_are_named():
    model = MIX.model_fn(PATH)
    clf = G.oracle_classifier(MIX, PATH)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\].*\[8\]"):
        G.classifier_guided(model, clf, jnp.array([0, 8]), path=PATH)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\].*\[-1\]"):
        G.classifier_guided(model, clf, jnp.array([-1, 3]), path=PATH, num_classes=8)
    with pytest.raises(TypeError, match="labels must be integers"):
        G.classifier_guided(model, clf, jnp.array([0.0, 1.0]), path=PATH)
    with pytest.raises(ValueError, match=r"scale .* must be a scalar"):
        G.classifier_guided(model, clf, jnp.array([0, 1]), scale=jnp.ones(2), path=PATH)
    with pytest.raises(ValueError, match="unknown prediction 'velocty'"):
        G.classifier_guided(model, clf, jnp.array([0, 1]), path=PATH, prediction="velocty")
    cg = G.classifier_guided(model, clf, jnp.array([0, 1]), path=PATH)
    with pytest.raises(ValueError, match=r"labels have shape .*one label per sample"):
        cg(jnp.zeros((3, 2)), jnp.full((3,), 0.5))
    # the conditional oracle: the null label K is allowed, K + 1 is not
    co = G.conditional_oracle(MIX, PATH)
    co(jnp.zeros((2, 2)), jnp.full((2,), 0.5), jnp.array([0, K]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 8\] \(8 is the null label\).*9"):
        co(jnp.zeros((2, 2)), jnp.full((2,), 0.5), jnp.array([0, K + 1]))
    # the classifier loss and model
    clf_model = M.Classifier(K, hidden=(8,))
    params = M.init(clf_model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    loss_fn = G.make_classifier_loss(M.make_apply_fn(clf_model), PATH, num_classes=K)
    bad = {"x": jnp.zeros((2, 2)), "label": jnp.array([1, 12], jnp.int32)}
    with pytest.raises(ValueError, match=r'batch\["label"\] must lie in \[0, 7\].*12'):
        loss_fn(params, bad, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="predicts the label"):
        M.apply(clf_model, params, jnp.zeros((2, 2)), jnp.zeros(2), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        M.Classifier(1)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        G.make_classifier_loss(M.make_apply_fn(clf_model), PATH, num_classes=1)


# ------------------------------------------------------------------ classifier_free (labels checked)


def test_classifier_free_is_the_samplers_guidance_with_checked_labels():
    """``classifier_free`` equals ``guided_model(fn, labels, K, w)`` step for step;
    at w = 0 and w = 1 it is the null-label and the conditional prediction of the network; labels
    outside [0, K) (K read from the model) are rejected naming them, before any sampling."""
    net = M.MLP(hidden=(32,), num_classes=10)
    params = M.init(net, jax.random.PRNGKey(0), jnp.zeros((1, 64)))
    fn = M.model_fn(net, params)
    labels = jnp.arange(6, dtype=jnp.int32) % 10
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 64))
    t = jnp.full((6,), 0.3)
    null = jnp.full((6,), 10, jnp.int32)
    chex.assert_trees_all_close(
        G.classifier_free(fn, labels, scale=0.0)(x, t), fn(x, t, null), rtol=1e-7, atol=1e-6
    )
    chex.assert_trees_all_close(
        G.classifier_free(fn, labels, scale=1.0)(x, t), fn(x, t, labels), rtol=1e-7, atol=1e-6
    )
    assert float(jnp.max(jnp.abs(fn(x, t, labels) - fn(x, t, null)))) > 1e-3  # they differ
    kw = dict(method="sde", num_steps=4)
    a = sample(G.classifier_free(fn, labels, scale=2.5), PATH, jax.random.PRNGKey(2), (6, 64),
               **kw).samples  # fmt: skip
    b = sample(guided_model(fn, labels, jnp.int32(10), 2.5), PATH, jax.random.PRNGKey(2),
               (6, 64), **kw).samples  # fmt: skip
    chex.assert_trees_all_close(a, b, rtol=1e-7, atol=1e-5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\] \(num_classes = 10\).*11"):
        G.classifier_free(fn, jnp.array([0, 11]), scale=2.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\].*\[10\]"):
        G.classifier_free(fn, jnp.array([10, 1]), scale=2.0)  # the null label is no class
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\].*-2"):
        G.classifier_free(G.conditional_oracle(MIX, PATH), jnp.array([-2, 1]))
    with pytest.raises(ValueError, match="num_classes is needed"):
        G.classifier_free(lambda x, t, c: x, jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"scale .* must be a scalar"):
        G.classifier_free(fn, labels, scale=jnp.ones(2))


def test_cfg_on_digits_trained_with_label_dropout():
    """Ten digit classes end to end: a class-conditional MLP trained with label dropout through
    flowjax.training; a logistic-regression reader of clean digits reads guided samples (w = 3) as
    their class far more often than unguided ones (w = 0, about chance)."""
    from sklearn.linear_model import LogisticRegression

    from flowjax import data as D
    from flowjax import losses as L

    levels, lab = D.digits_arrays("train")
    x = D.scale_levels(levels, D.DIGITS_NUM_LEVELS).reshape(len(levels), 64)
    lab = lab.astype(np.int32)
    reader = LogisticRegression(max_iter=1000, C=0.5).fit(x, lab)
    net = M.MLP(hidden=(128, 128), num_classes=10)
    params = M.init(net, jax.random.PRNGKey(0), jnp.zeros((1, 64)))
    loss_fn = L.make_loss(M.make_apply_fn(net), PATH, num_classes=10, label_dropout=0.2)
    steps, bs = 150, 128
    opt = T.make_optimizer("adam", 2e-3, schedule="cosine", total_steps=steps)
    step = T.make_train_step(loss_fn, opt, mesh=fj.parallel.make_mesh(), ema_decay=None)
    state = T.create_train_state(params, opt, jax.random.PRNGKey(1), ema=False)
    order = np.random.default_rng(0).integers(0, len(x), (steps, bs))
    for i in range(steps):
        state, metrics = step(state, {"x": x[order[i]], "label": lab[order[i]]})
    assert np.isfinite(float(metrics["loss"]))
    fn = M.model_fn(net, state.params)
    labels = jnp.arange(200, dtype=jnp.int32) % 10
    acc = {}
    for w in (0.0, 3.0):
        xs = sample(G.classifier_free(fn, labels, scale=w), PATH, jax.random.PRNGKey(2), (200, 64),
                    solver="heun", num_steps=10).samples  # fmt: skip
        acc[w] = float(np.mean(reader.predict(np.clip(np.asarray(xs), -1, 1)) == labels))
    print("digits CFG reader accuracy by w", acc)
    assert acc[0.0] < 0.3, acc  # unguided: about chance (0.1)
    assert acc[3.0] > 0.7, acc
