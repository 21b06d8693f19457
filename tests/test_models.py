"""Models: shapes at every supported size, conditioning, null label, dropout, mixed precision,
parameter counts, the pytree boundary (init / apply / model_fn), and bad input."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import models as M

IMAGE_SIZES = [(8, 1), (16, 3), (28, 1), (32, 3)]  # digits, small RGB, MNIST, CIFAR-10
SMALL_UNET = {
    "channels": 8,
    "channel_mults": (1, 2),
    "num_res_blocks": 1,
    "num_groups": 4,
    "head_dim": 8,
    "dropout": 0.1,
}


def perturb(params, key, scale=0.2):
    """Random parameters: the zero-initialised output layers would hide what a test looks for."""
    leaves, tree = jax.tree.flatten(params)
    sizes = [p.size for p in leaves]
    noise = np.asarray(jax.random.normal(key, (sum(sizes),)))  # one draw: cheap to compile
    chunks = np.split(noise, np.cumsum(sizes)[:-1])
    noisy = [
        p + scale * jnp.asarray(c.reshape(p.shape), p.dtype)
        for p, c in zip(leaves, chunks, strict=True)
    ]
    return tree.unflatten(noisy)


def shapes_of_init(model, x_shape, dtype=jnp.float32):
    """Parameter shapes without compiling or running the initialisers."""
    return jax.eval_shape(
        lambda k: M.init(model, k, jnp.zeros(x_shape, dtype)), jax.random.PRNGKey(0)
    )


@pytest.fixture(scope="module")
def unet():
    model = M.UNet(num_classes=10, **SMALL_UNET)
    params = perturb(
        M.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1))), jax.random.PRNGKey(1)
    )
    return model, params


# ------------------------------------------------------------------ MLP


@pytest.mark.parametrize("time_embedding", ["sinusoidal", "fourier", "learned", "none"])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_mlp_shapes_and_conditioning(time_embedding, num_classes):
    model = M.MLP(
        hidden=(16, 16), time_embedding=time_embedding, time_embed_dim=8, num_classes=num_classes
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    params = M.init(model, jax.random.PRNGKey(1), x)
    t = jnp.linspace(0.0, 1.0, 5)
    out = M.apply(model, params, x, t)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(
        M.apply(model, params, x, 0.3), M.apply(model, params, x, jnp.full(5, 0.3))
    )
    other_t = M.apply(model, params, x, t[::-1])
    assert not np.allclose(out, other_t)  # the time input is used
    if num_classes:
        a = M.apply(model, params, x, t, jnp.zeros(5, jnp.int32))
        b = M.apply(model, params, x, t, jnp.ones(5, jnp.int32))
        null = M.apply(model, params, x, t, jnp.full(5, num_classes, jnp.int32))
        assert not np.allclose(a, b)
        np.testing.assert_array_equal(out, null)  # label=None is the null label
    wide = M.MLP(hidden=(16,), time_embedding=time_embedding, time_embed_dim=8, out_dim=7)
    assert M.apply(wide, M.init(wide, jax.random.PRNGKey(1), x), x, t).shape == (5, 7)


def test_mlp_parameter_counts_match_closed_form():
    d, (h1, h2), e, k = 2, (32, 24), 16, 4
    plain = M.MLP(hidden=(h1, h2), time_embedding="none", time_embed_dim=e, num_classes=k)
    n_plain = (d * h1 + h1) + (1 + e) * h1 + (k + 1) * e + (h1 * h2 + h2) + (h2 * d + d)
    assert M.count_params(M.init(plain, jax.random.PRNGKey(0), jnp.zeros((1, d)))) == n_plain
    emb = M.MLP(hidden=(h1, h2), time_embedding="sinusoidal", time_embed_dim=e)
    n_emb = 2 * (e * e + e) + (d * h1 + h1 + e * h1) + (h1 * h2 + h2 + e * h2) + (h2 * d + d)
    assert M.count_params(M.init(emb, jax.random.PRNGKey(0), jnp.zeros((1, d)))) == n_emb
    # The benchmark's 3-input MLP: 2 data inputs + t, four hidden layers of 512.
    bench = M.MLP(time_embedding="none")
    assert (
        M.count_params(shapes_of_init(bench, (1, 2)))
        == 3 * 512 + 512 + 3 * (512 * 512 + 512) + 512 * 2 + 2
    )
    # Fourier frequencies are constants, not parameters.
    four = M.MLP(hidden=(h1, h2), time_embedding="fourier", time_embed_dim=e)
    assert M.count_params(shapes_of_init(four, (1, d))) == n_emb
    # Learned Fourier features: e/2 trainable frequencies more.
    learned = M.MLP(hidden=(h1, h2), time_embedding="learned", time_embed_dim=e)
    assert M.count_params(shapes_of_init(learned, (1, d))) == n_emb + e // 2


# ------------------------------------------------------------------ U-Net


@pytest.mark.parametrize(("size", "channels"), IMAGE_SIZES)
def test_unet_output_shapes(size, channels):
    model = M.UNet(num_classes=10, **SMALL_UNET)
    x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
    params = shapes_of_init(model, x.shape)
    t = jax.ShapeDtypeStruct((2,), jnp.float32)
    label = jax.ShapeDtypeStruct((2,), jnp.int32)
    for lab in (label, None):
        out = jax.eval_shape(lambda p, x, t, lab: M.apply(model, p, x, t, lab), params, x, t, lab)
        assert out.shape == x.shape and out.dtype == jnp.float32
    # Attention at every level but the first (default) and the middle, whatever the size; the
    # DDPM-style explicit resolution list as well.
    explicit = M.UNet(attention_resolutions=(size // 2,), **SMALL_UNET)
    assert (
        jax.eval_shape(
            lambda p: M.apply(explicit, p, jnp.zeros(x.shape), jnp.zeros(2)),
            shapes_of_init(explicit, x.shape),
        ).shape
        == x.shape
    )


def unet_param_count(c_in, channels, mults, blocks, num_classes, *, attn_levels=None, emb_in=None):
    """The U-Net's parameter count written out from its docstring (not from the module's code).

    ``attn_levels``: levels with attention (default: all but the first); the middle always has it.
    ``emb_in``: width of the time features (``channels``; 1 for ``time_embedding="none"``).
    """
    emb = 4 * channels
    emb_in = channels if emb_in is None else emb_in
    attn_levels = set(range(1, len(mults))) if attn_levels is None else set(attn_levels)

    def dense(a, b):
        return a * b + b

    def conv3(a, b):
        return 9 * a * b + b

    def res(a, b):  # GN, conv, ada (scale+shift), GN, conv, 1x1 skip when widths differ
        return (
            2 * a
            + conv3(a, b)
            + dense(emb, 2 * b)
            + 2 * b
            + conv3(b, b)
            + (dense(a, b) if a != b else 0)
        )

    def attn(c):  # GN, qkv, output projection
        return 2 * c + dense(c, 3 * c) + dense(c, c)

    n = dense(emb_in, emb) + dense(emb, emb)  # the time MLP
    n += (num_classes + 1) * emb if num_classes else 0
    n += conv3(c_in, channels)
    skips, h = [channels], channels
    for level, m in enumerate(mults):
        for _ in range(blocks):
            n += res(h, channels * m) + (attn(channels * m) if level in attn_levels else 0)
            h = channels * m
            skips.append(h)
        if level != len(mults) - 1:
            n += conv3(h, h)
            skips.append(h)
    n += 2 * res(h, h) + attn(h)
    for level in reversed(range(len(mults))):
        ch = channels * mults[level]
        for _ in range(blocks + 1):
            n += res(h + skips.pop(), ch) + (attn(ch) if level in attn_levels else 0)
            h = ch
        if level != 0:
            n += conv3(ch, ch)
    return n + 2 * h + conv3(h, c_in)  # GroupNorm and conv_out


def test_unet_parameter_counts():
    model = M.UNet(num_classes=10, **SMALL_UNET)
    counts = {
        hw_c: M.count_params(shapes_of_init(model, (1, hw_c[0], hw_c[0], hw_c[1])))
        for hw_c in IMAGE_SIZES
    }
    small = (SMALL_UNET["channels"], SMALL_UNET["channel_mults"], SMALL_UNET["num_res_blocks"])
    for (_, c), count in counts.items():  # convolutions and attention ignore the image size
        assert count == unet_param_count(c, *small, 10), (c, count)
    # Doubling every width: exact count again (the old check allowed a 3.5-4x ratio).
    wide = M.UNet(num_classes=10, **{**SMALL_UNET, "channels": 16})
    assert M.count_params(shapes_of_init(wide, (1, 8, 8, 1))) == unet_param_count(
        1, 16, (1, 2), 1, 10
    )
    # The default CIFAR-10-sized U-Net (channels 64, mults (1, 2, 2), 2 blocks), exactly.
    default = M.count_params(shapes_of_init(M.UNet(num_classes=10), (1, 32, 32, 3)))
    print(f"default UNet (32x32x3, 10 classes): {default:,} parameters")
    assert default == unet_param_count(3, 64, (1, 2, 2), 2, 10)
    # Plain time input: the time MLP reads one feature; learned Fourier adds channels/2 frequencies.
    for emb, extra in (("none", 0), ("learned", SMALL_UNET["channels"] // 2)):
        other = M.UNet(num_classes=10, **{**SMALL_UNET, "time_embedding": emb})
        emb_in = 1 if emb == "none" else None
        assert M.count_params(shapes_of_init(other, (1, 8, 8, 1))) == extra + unet_param_count(
            1, *small, 10, emb_in=emb_in
        )
    # DDPM's explicit attention list: attention at height 16 of a 32x32 input is level 1.
    ddpm = M.UNet(attention_resolutions=(16,), **SMALL_UNET)
    assert M.count_params(shapes_of_init(ddpm, (1, 32, 32, 3))) == unet_param_count(
        3, *small, None, attn_levels={1}
    )
    summary = M.summary(model, shapes_of_init(model, (1, 8, 8, 1)))
    assert f"{counts[(8, 1)]:,} parameters" in summary and "conv_in" in summary


@pytest.mark.parametrize("size", [8, 28])
def test_unet_runs_and_conditions_on_class(unet, size):
    model, params = unet
    x = jax.random.normal(jax.random.PRNGKey(2), (3, size, size, 1))
    t = jnp.array([0.1, 0.5, 0.9])
    fwd = jax.jit(lambda p, x, t, lab: M.apply(model, p, x, t, lab))
    cls0 = fwd(params, x, t, jnp.zeros(3, jnp.int32))
    cls1 = fwd(params, x, t, jnp.ones(3, jnp.int32))
    null = fwd(params, x, t, jnp.full(3, 10, jnp.int32))
    none = fwd(params, x, t, None)
    assert cls0.shape == x.shape and bool(jnp.all(jnp.isfinite(cls0)))
    assert float(jnp.max(jnp.abs(cls0 - cls1))) > 1e-3  # class conditioning changes the output
    np.testing.assert_allclose(none, null, rtol=1e-6, atol=1e-6)  # label=None is the null label
    assert float(jnp.max(jnp.abs(cls0 - null))) > 1e-3
    other_t = fwd(params, x, t[::-1], None)
    assert float(jnp.max(jnp.abs(other_t - none))) > 1e-3


def test_dropout_only_in_train_mode(unet):
    model, params = unet
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 1))
    t = jnp.array([0.3, 0.7])
    apply_fn = M.make_apply_fn(model)
    train = jax.jit(lambda p, k: apply_fn(p, x, t, None, train=True, key=k))
    evaluate = jax.jit(lambda p, k: apply_fn(p, x, t, None, train=False, key=k))
    k1, k2 = jax.random.PRNGKey(3), jax.random.PRNGKey(4)
    np.testing.assert_array_equal(evaluate(params, k1), evaluate(params, k2))
    a, b = train(params, k1), train(params, k2)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3
    assert float(jnp.max(jnp.abs(a - evaluate(params, k1)))) > 1e-3
    np.testing.assert_array_equal(a, train(params, k1))  # same key, same mask
    with pytest.raises(ValueError, match="needs a dropout key"):
        M.apply(model, params, x, t, train=True)


def test_bfloat16_compute_with_float32_params(unet):
    model, params = unet
    low = model.clone(dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes_of_init(low, (1, 8, 8, 1))))
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 1))
    t = jnp.array([0.3, 0.7])
    ref = jax.jit(lambda p: M.apply(model, p, x, t))(params)
    fwd = lambda p: M.apply(low, p, x, t)  # noqa: E731
    out = jax.jit(fwd)(params)
    assert out.dtype == jnp.float32  # returned in x's dtype
    rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
    assert 0 < rel < 0.05, rel
    jaxpr = str(jax.make_jaxpr(fwd)(params))
    assert "conv_general_dilated" in jaxpr and "bf16[2,8,8,8]" in jaxpr
    # The MLP too.
    mlp = M.MLP(hidden=(32,), dtype=jnp.bfloat16)
    p = M.init(mlp, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p))
    assert "bf16[4,32]" in str(
        jax.make_jaxpr(lambda p: M.apply(mlp, p, jnp.ones((4, 2)), jnp.ones(4)))(p)
    )


# ------------------------------------------------------------------ the pytree boundary


def test_model_fn_is_a_pytree_jitted_once():
    model = M.MLP(hidden=(16,), num_classes=3)
    x = jnp.ones((4, 2))
    p1 = M.init(model, jax.random.PRNGKey(0), x)
    p2 = perturb(p1, jax.random.PRNGKey(1))
    f1, f2 = M.model_fn(model, p1), M.model_fn(model, p2)
    assert jax.tree.structure(f1) == jax.tree.structure(f2)
    assert len(jax.tree.leaves(f1)) == len(jax.tree.leaves(p1))
    traces = []

    @jax.jit
    def sample_step(fn, x, t):
        traces.append(None)
        return x + 0.1 * fn(x, t, jnp.array([0, 1, 2, 3], jnp.int32))

    a, b = sample_step(f1, x, 0.5), sample_step(f2, x, 0.5)
    assert len(traces) == 1  # new parameters do not retrace
    np.testing.assert_allclose(
        a, x + 0.1 * M.apply(model, p1, x, 0.5, jnp.array([0, 1, 2, 3])), rtol=1e-6
    )
    assert not np.allclose(a, b)
    assert hash(model) == hash(M.MLP(hidden=(16,), num_classes=3))
    # Lists from configs become tuples, so the module stays hashable for model_fn.
    assert M.MLP(hidden=[16], num_classes=3) == model
    assert hash(M.UNet(channel_mults=[1, 2], attention_resolutions=[4])) == hash(
        M.UNet(channel_mults=(1, 2), attention_resolutions=(4,))
    )
    assert M.count_params(p1) == sum(np.size(leaf) for leaf in jax.tree.leaves(p1))


def test_init_is_deterministic():
    model = M.MLP(hidden=(8,))
    a = M.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    b = M.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    c = M.init(model, jax.random.PRNGKey(1), jnp.zeros((1, 2)))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.allclose(a["input"]["kernel"], c["input"]["kernel"])


def test_embeddings():
    t = jnp.array([0.0, 0.25, 1.0])
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    for scale in (1.0, 1000.0):  # 1 is the default; DDPM's integer steps were t * 1000
        kw = {} if scale == 1.0 else {"scale": scale}
        args = scale * np.asarray(t)[:, None] * freqs[None]
        chex.assert_trees_all_close(
            M.sinusoidal_embedding(t, 8, **kw),
            np.concatenate([np.cos(args), np.sin(args)], 1).astype(np.float32),
            rtol=1e-5,
            atol=1e-4,
        )
    f0, f1 = M.fourier_embedding(t, 8, seed=0), M.fourier_embedding(t, 8, seed=1)
    np.testing.assert_array_equal(f0, M.fourier_embedding(t, 8, seed=0))
    chex.assert_shape(f0, (3, 8))
    assert not np.allclose(f0, f1)
    chex.assert_trees_all_close(f0[:, :4] ** 2 + f0[:, 4:] ** 2, jnp.ones((3, 4)), rtol=1e-5)
    ce = M.ClassEmbedding(num_classes=5, dim=4)
    p = ce.init(jax.random.PRNGKey(0), None, 2)
    assert p["params"]["Embed_0"]["embedding"].shape == (6, 4)  # 5 classes + the null class
    with pytest.raises(ValueError, match="even"):
        M.sinusoidal_embedding(t, 7)


# ------------------------------------------------------------------ bad input


def test_bad_input_raises_naming_the_problem(unet):
    model, params = unet
    x, t = jnp.zeros((2, 8, 8, 1)), jnp.zeros(2)
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\): 3 channels.*initialised for 1-channel"):
        M.apply(model, params, jnp.zeros((2, 8, 8, 3)), t)
    with pytest.raises(ValueError, match=r"H and W must be divisible by .* = 2"):
        M.apply(model, params, jnp.zeros((2, 9, 9, 1)), t)
    with pytest.raises(
        ValueError, match=r"UNet expects x of shape \[B, H, W, C\]; got shape \(2, 8, 8\)"
    ):
        M.apply(model, params, jnp.zeros((2, 8, 8)), t)
    with pytest.raises(
        ValueError, match=r"label must lie in \[0, 10\] \(10 is the null label\).*\[11\]"
    ):
        M.apply(model, params, x, t, jnp.array([0, 11], jnp.int32))
    with pytest.raises(ValueError, match=r"label must have shape \[B\] = \(2,\)"):
        M.apply(model, params, x, t, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[B\] = \(2,\)"):
        M.apply(model, params, x, jnp.zeros(3))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        M.apply(model, params, x.astype(jnp.int32), t)
    mlp = M.MLP(hidden=(8,))
    p = M.init(mlp, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="model is unconditional"):
        M.apply(mlp, p, jnp.zeros((2, 2)), t, jnp.zeros(2, jnp.int32))
    with pytest.raises(
        ValueError, match=r"unknown activation 'swish'; valid choices are: silu, relu"
    ):
        M.MLP(activation="swish")
    with pytest.raises(
        ValueError, match=r"unknown time embedding 'random'.*none, sinusoidal, fourier, learned"
    ):
        M.MLP(time_embedding="random")
    with pytest.raises(ValueError, match=r"time_input='log_snr' needs the model's path"):
        M.UNet(time_input="log_snr")
    with pytest.raises(TypeError, match=r"flax\.linen Module"):
        M.init(lambda x: x, jax.random.PRNGKey(0), x)


def test_label_range_checked_inside_jit_in_checked_mode():
    model = M.MLP(hidden=(8,), num_classes=3)
    x = jnp.zeros((2, 2))
    p = M.init(model, jax.random.PRNGKey(0), x)
    fwd = jax.jit(lambda p, lab: M.apply(model, p, x, jnp.zeros(2), lab))
    fwd(p, jnp.array([0, 3], jnp.int32))  # 3 is the null label: valid
    with pytest.raises(Exception, match=r"label must lie in \[0, 3\]"):
        fj.checked(fwd)(p, jnp.array([0, 4], jnp.int32))
    assert math.isfinite(float(jnp.sum(fwd(p, jnp.array([0, 1], jnp.int32)))))
