"""Unit tests for jaxlearn.spaces: sampling, membership, clipping, normalisation, conversion."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces as gs

from jaxlearn.spaces import Box, Dict, Discrete, Hybrid, Space, flat_dim, from_gymnax

N_KEYS = 4000


def _keys(seed: int = 0, n: int = N_KEYS) -> jax.Array:
    return jax.random.split(jax.random.key(seed), n)


# Spaces are hashable, so as static arguments equal spaces share one compiled program; the
# sampling tests below reuse these instead of each compiling its own (RNG compiles are slow on CPU).
_sample_batch = jax.jit(lambda space, keys: jax.vmap(space.sample)(keys), static_argnums=0)
_contains_batch = jax.jit(lambda space, xs: jax.vmap(space.contains)(xs), static_argnums=0)


def _hybrid() -> Hybrid:
    return Hybrid(
        {
            "move": Box(-1, 1, (2,)),
            "comm": Box(0, 1, (4,)),
            "choice": Discrete(3),
            "inner": Hybrid({"gain": Box([0.0, -5.0], [2.0, 5.0]), "flag": Discrete(2)}),
        }
    )


def _valid_hybrid_action() -> dict:
    return {
        "move": jnp.array([0.5, -1.0]),
        "comm": jnp.zeros(4),
        "choice": jnp.asarray(2),
        "inner": {"gain": jnp.array([2.0, 0.0]), "flag": jnp.asarray(0)},
    }


# The last dimension of box_bounded is degenerate (low == high).
BOUNDED = Box(np.array([-2.0, 0.0, -0.1, 1e-3, 5.0]), np.array([2.0, 10.0, 0.3, 1e3, 5.0]))
UNBOUNDED = Box(np.array([-np.inf, 1.0, -np.inf, -1.0]), np.array([np.inf, np.inf, -1.0, 1.0]))
SPACES = {
    "discrete": Discrete(4),
    "box_bounded": BOUNDED,
    "box_unbounded": UNBOUNDED,
    "box_scalar": Box(-2.0, 2.0),
    "box_int": Box(-2, 2, (3, 2), dtype=jnp.int32),
    "box_uint8": Box(0, 255, (2,), dtype=jnp.uint8),
    "box_bool": Box(0, 1, (4,), dtype=jnp.bool_),
    "hybrid": _hybrid(),
}


def _leaf_spaces(space):
    """Leaf spaces in the order jax.tree.leaves visits a sample (dict keys sorted)."""
    if isinstance(space, Hybrid):
        return [leaf for k in sorted(space.spaces) for leaf in _leaf_spaces(space.spaces[k])]
    return [space]


# --------------------------------------------------------------------------------------------
# sample / contains
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPACES))
def test_samples_are_contained_under_jit_and_vmap(name):
    space = SPACES[name]
    samples = _sample_batch(space, _keys())
    ok = _contains_batch(space, samples)
    assert ok.shape == (N_KEYS,) and ok.dtype == jnp.bool_
    assert bool(ok.all())
    # A vmapped batch is [B, *shape] per leaf space, in the leaf space's dtype.
    leaves, subs = jax.tree.leaves(samples), _leaf_spaces(space)
    assert len(leaves) == len(subs)
    for leaf, sub in zip(leaves, subs, strict=True):
        assert leaf.shape == (N_KEYS, *sub.shape) and leaf.dtype == sub.dtype
    first = jax.tree.map(lambda a: np.asarray(a[0]), samples)
    assert space.validate(first) is first


def test_eager_sample_is_contained():
    for space in (Discrete(3), Box(-1.0, 1.0, (2,))):
        x = space.sample(jax.random.key(3))
        assert x.shape == space.shape and bool(space.contains(x))


def test_hybrid_sample_uses_distinct_subkeys():
    # Same-shaped sub-spaces must not produce identical draws.
    twin = Hybrid({"a": Box(0, 1, (3,)), "b": Box(0, 1, (3,))})
    s = jax.jit(twin.sample)(jax.random.key(0))
    assert not np.allclose(s["a"], s["b"])


def test_discrete_sample_frequencies():
    samples = _sample_batch(Discrete(4), _keys())
    freqs = np.bincount(np.asarray(samples), minlength=4) / N_KEYS
    assert freqs.shape == (4,)
    assert np.all((freqs >= 0.2) & (freqs <= 0.3)), freqs


def test_box_sample_spans_bounds():
    samples = np.asarray(_sample_batch(BOUNDED, _keys()))
    low, high = BOUNDED.low, BOUNDED.high
    assert np.all(samples >= low) and np.all(samples <= high)
    width = high - low
    assert np.all(samples.min(0) - low <= 0.01 * width), samples.min(0)
    assert np.all(high - samples.max(0) <= 0.01 * width), samples.max(0)
    np.testing.assert_allclose(samples.mean(0)[:2], [0.0, 5.0], atol=0.2)
    assert np.all(samples[:, 4] == 5.0)  # degenerate dimension


def test_box_unbounded_sample_follows_gym_convention():
    samples = np.asarray(_sample_batch(UNBOUNDED, _keys()))
    assert np.isfinite(samples).all()
    # (-inf, inf): standard normal.
    assert abs(samples[:, 0].mean()) < 0.1 and abs(samples[:, 0].std() - 1.0) < 0.1
    # [1, inf): 1 + Exp(1).
    assert samples[:, 1].min() >= 1.0 and abs(samples[:, 1].mean() - 2.0) < 0.1
    # (-inf, -1]: -1 - Exp(1).
    assert samples[:, 2].max() <= -1.0 and abs(samples[:, 2].mean() + 2.0) < 0.1
    # [-1, 1]: uniform.
    assert samples[:, 3].min() < -0.98 and samples[:, 3].max() > 0.98


def test_integer_box_sample_hits_both_ends():
    samples = np.asarray(_sample_batch(SPACES["box_int"], _keys()))
    assert set(np.unique(samples).tolist()) == {-2, -1, 0, 1, 2}
    samples = np.asarray(_sample_batch(SPACES["box_uint8"], _keys()))
    assert samples.min() == 0 and samples.max() == 255


def test_discrete_contains():
    space = Discrete(3)
    assert bool(space.contains(0)) and bool(space.contains(2))
    assert bool(space.contains(jnp.float32(1.0)))  # integral float is fine
    assert not bool(space.contains(3))
    assert not bool(space.contains(-1))
    assert not bool(space.contains(jnp.float32(1.5)))
    assert not bool(space.contains(jnp.float32(jnp.nan)))
    assert not bool(space.contains(jnp.array([1])))  # wrong shape
    assert not bool(space.contains(jnp.array(True)))  # bool is not an index


def test_box_contains():
    space = Box(-1.0, 1.0, (2,))
    assert bool(space.contains(jnp.array([-1.0, 1.0])))
    assert not bool(space.contains(jnp.array([0.0, 1.0001])))
    assert not bool(space.contains(jnp.array([-1.5, 0.0])))
    assert not bool(space.contains(jnp.array([0.0, jnp.nan])))
    assert not bool(space.contains(jnp.zeros(3)))
    assert not bool(space.contains(jnp.zeros((2, 1))))
    assert not bool(space.contains(0.0))
    int_box = Box(0, 5, (2,), dtype=jnp.int32)
    assert bool(int_box.contains(jnp.array([0, 5])))
    assert not bool(int_box.contains(jnp.array([0.5, 1.0])))


def test_contains_under_jit_returns_bool_for_bad_input():
    box, disc = Box(-1.0, 1.0, (2,)), Discrete(3)
    out = jax.jit(box.contains)(jnp.zeros(5))  # wrong shape: no exception, just False
    assert out.dtype == jnp.bool_ and out.shape == () and not bool(out)
    assert not bool(jax.jit(disc.contains)(jnp.float32(0.5)))
    assert not bool(jax.jit(box.contains)(jnp.array([0.0, 2.0])))
    assert bool(jax.jit(box.contains)(jnp.array([0.0, 0.5])))


def test_contains_vmap_mixed_batch():
    space = Box(0.0, 1.0, (2,))
    batch = jnp.array([[0.0, 0.5], [1.0, 1.0], [-0.1, 0.5], [0.5, 2.0]])
    np.testing.assert_array_equal(jax.vmap(space.contains)(batch), [True, True, False, False])


def test_hybrid_contains_per_key_and_key_mismatch():
    space = _hybrid()
    good = _valid_hybrid_action()
    assert bool(space.contains(good))
    assert bool(jax.jit(space.contains)(good))
    for path, bad_value in [
        (("move",), jnp.array([0.0, 1.5])),
        (("choice",), jnp.asarray(3)),
        (("inner", "gain"), jnp.array([-0.1, 0.0])),
        (("inner", "flag"), jnp.float32(0.5)),
    ]:
        bad = jax.tree.map(lambda a: a, good)
        target = bad
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = bad_value
        assert not bool(space.contains(bad)), path
        assert not bool(jax.jit(space.contains)(bad)), path
    missing = {k: v for k, v in good.items() if k != "comm"}
    assert not bool(space.contains(missing))
    assert not bool(space.contains({**good, "extra": jnp.zeros(1)}))
    assert not bool(space.contains(jnp.zeros(3)))


# --------------------------------------------------------------------------------------------
# clip / normalize / denormalize
# --------------------------------------------------------------------------------------------


def test_box_clip_puts_values_on_boundary():
    space = Box(np.array([-1.0, 0.0, -np.inf]), np.array([1.0, 2.0, 3.0]))
    x = jnp.array([5.0, -7.0, -1e9])
    np.testing.assert_array_equal(space.clip(x), [1.0, 0.0, -1e9])
    np.testing.assert_array_equal(space.clip(jnp.array([-5.0, 9.0, 9.0])), [-1.0, 2.0, 3.0])
    inside = jnp.array([0.25, 1.5, -2.0])
    np.testing.assert_array_equal(jax.jit(space.clip)(inside), inside)
    assert bool(space.contains(space.clip(jnp.array([100.0, -100.0, 100.0]))))


def test_discrete_clip_rounds_and_clips():
    space = Discrete(4)
    clipped = jax.vmap(space.clip)(jnp.array([-3.0, 1.4, 1.6, 9.0]))
    np.testing.assert_array_equal(clipped, [0, 1, 2, 3])
    assert clipped.dtype == jnp.int32
    np.testing.assert_array_equal(jax.vmap(space.clip)(jnp.array([-1, 7])), [0, 3])


def test_discrete_normalize_is_identity():
    space = Discrete(4)
    x = jnp.array(3)
    np.testing.assert_array_equal(space.normalize(x), x)
    np.testing.assert_array_equal(space.denormalize(x), x)


@pytest.mark.parametrize("use_jit", [False, True])
def test_box_normalize_endpoints_exact(use_jit):
    space = Box(np.array([-0.1, -3.7, 0.0, 1e-3]), np.array([0.3, 11.3, 1e-7, 1e3]))
    norm = jax.jit(space.normalize) if use_jit else space.normalize
    denorm = jax.jit(space.denormalize) if use_jit else space.denormalize
    np.testing.assert_array_equal(norm(jnp.asarray(space.low)), -np.ones(4))
    np.testing.assert_array_equal(norm(jnp.asarray(space.high)), np.ones(4))
    np.testing.assert_array_equal(denorm(-jnp.ones(4)), space.low)
    np.testing.assert_array_equal(denorm(jnp.ones(4)), space.high)


def test_box_normalize_round_trip():
    x = _sample_batch(BOUNDED, _keys())
    y = jax.jit(jax.vmap(BOUNDED.normalize))(x)
    assert np.all((y >= -1) & (y <= 1))
    np.testing.assert_array_equal(y[:, 4], 0.0)  # degenerate dimension
    np.testing.assert_allclose(jax.jit(jax.vmap(BOUNDED.denormalize))(y), x, rtol=1e-5, atol=1e-6)
    # And the other way round, on the non-degenerate dimensions.
    y0 = np.linspace(-1, 1, 64 * 5, dtype=np.float32).reshape(64, 5)
    y0_back = jax.jit(lambda y: jax.vmap(BOUNDED.normalize)(jax.vmap(BOUNDED.denormalize)(y)))(y0)
    np.testing.assert_allclose(y0_back[:, :4], y0[:, :4], rtol=1e-4, atol=1e-4)


def test_box_normalize_midpoint_and_degenerate_dims():
    space = Box(np.array([0.0, 5.0]), np.array([4.0, 5.0]))
    np.testing.assert_allclose(space.normalize(jnp.array([2.0, 5.0])), [0.0, 0.0])
    np.testing.assert_allclose(space.normalize(jnp.array([3.0, 5.0])), [0.5, 0.0])
    out = space.denormalize(jnp.array([0.0, 0.7]))
    np.testing.assert_allclose(out, [2.0, 5.0])
    assert np.isfinite(np.asarray(space.normalize(jnp.array([1.0, 6.0])))).all()


def test_integer_box_normalize_returns_float():
    space = Box(0, 255, (2,), dtype=jnp.uint8)
    y = space.normalize(jnp.array([0, 255], dtype=jnp.uint8))
    assert jnp.issubdtype(y.dtype, jnp.floating)
    np.testing.assert_array_equal(y, [-1.0, 1.0])
    np.testing.assert_array_equal(space.clip(space.denormalize(y)), [0, 255])


def test_normalize_requires_finite_bounds():
    with pytest.raises(ValueError, match=r"normalize needs finite bounds.*Box\.low\[1\]=-inf"):
        Box(np.array([0.0, -np.inf]), np.array([1.0, 1.0])).normalize(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"denormalize needs finite bounds.*Box\.high=inf"):
        Box(0.0, np.inf).denormalize(jnp.float32(0))
    nested = Hybrid({"a": Hybrid({"b": Box(0.0, np.inf)})})
    with pytest.raises(ValueError, match=r"\['a'\].*\['b'\].*finite bounds"):
        nested.normalize({"a": {"b": jnp.float32(1)}})
    with pytest.raises(ValueError, match="finite bounds"):
        jax.jit(Box(-np.inf, 0.0).normalize)(jnp.float32(0))


def test_hybrid_clip_and_normalize_round_trip_per_key():
    space = _hybrid()
    x = {
        "move": jnp.array([3.0, -0.5]),
        "comm": jnp.array([-1.0, 0.25, 0.75, 2.0]),
        "choice": jnp.asarray(7),
        "inner": {"gain": jnp.array([-1.0, 9.0]), "flag": jnp.asarray(-2)},
    }

    @jax.jit
    def run(x, samples):
        clipped = space.clip(x)
        y = jax.vmap(space.normalize)(samples)
        return clipped, space.contains(clipped), y, jax.vmap(space.denormalize)(y)

    samples = _sample_batch(space, _keys())
    clipped, clipped_ok, y, back = run(x, samples)
    np.testing.assert_array_equal(clipped["move"], [1.0, -0.5])
    np.testing.assert_array_equal(clipped["comm"], [0.0, 0.25, 0.75, 1.0])
    assert int(clipped["choice"]) == 2
    np.testing.assert_array_equal(clipped["inner"]["gain"], [0.0, 5.0])
    assert int(clipped["inner"]["flag"]) == 0
    assert bool(clipped_ok)

    assert jax.tree.structure(back) == jax.tree.structure(samples)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(samples), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Per key: boxes land in [-1, 1], the discrete index is untouched.
    assert np.all(np.abs(y["move"]) <= 1) and np.all(np.abs(y["comm"]) <= 1)
    np.testing.assert_allclose(y["comm"], 2 * samples["comm"] - 1, atol=1e-6)
    np.testing.assert_array_equal(y["choice"], samples["choice"])
    with pytest.raises(ValueError, match="missing.*'comm'"):
        space.clip({k: v for k, v in x.items() if k != "comm"})


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def test_validate_returns_valid_input():
    x = np.array([0.5, -1.0])
    assert Box(-1, 1, (2,)).validate(x) is x
    action = _valid_hybrid_action()
    assert _hybrid().validate(action) is action


def test_validate_box_names_index_value_and_bounds():
    space = Box(np.array([-1.0, 0.0, -2.0]), np.array([1.0, 2.0, 2.0]))
    with pytest.raises(ValueError, match=r"x\[1\]=2\.5 is out of bounds.*low=0\.0, high=2\.0"):
        space.validate(np.array([0.0, 2.5, 0.0]))
    with pytest.raises(ValueError, match=r"x\[2\]=nan"):
        space.validate(np.array([0.0, 1.0, np.nan]))
    with pytest.raises(ValueError, match=r"shape \(3,\).*got \(2,\)"):
        space.validate(np.zeros(2))


def test_validate_discrete():
    with pytest.raises(ValueError, match=r"x=3 is out of range; allowed integers 0\.\.2"):
        Discrete(3).validate(3)
    with pytest.raises(ValueError, match=r"x=1\.5 is not an integer.*0\.\.2"):
        Discrete(3).validate(1.5)
    with pytest.raises(ValueError, match=r"shape \(\)"):
        Discrete(3).validate(np.array([1]))
    assert Discrete(3).validate(2) == 2


def test_validate_hybrid_names_key_path():
    space = _hybrid()
    bad = _valid_hybrid_action()
    bad["inner"]["gain"] = jnp.array([0.0, -6.0])
    with pytest.raises(
        ValueError,
        match=r"x\['inner'\]\['gain'\]\[1\]=-6\.0 is out of bounds.*low=-5\.0, high=5\.0",
    ):
        space.validate(bad)
    bad = _valid_hybrid_action()
    bad["choice"] = 5
    with pytest.raises(ValueError, match=r"x\['choice'\]=5 is out of range.*0\.\.2"):
        space.validate(bad)
    missing = {k: v for k, v in _valid_hybrid_action().items() if k != "move"}
    with pytest.raises(ValueError, match=r"missing key 'move'"):
        space.validate(missing)
    with pytest.raises(ValueError, match=r"unexpected key 'oops'"):
        space.validate({**_valid_hybrid_action(), "oops": 1})
    with pytest.raises(ValueError, match="must be a mapping"):
        space.validate(np.zeros(3))


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -3, 2.0, True, "3"])
def test_discrete_rejects_bad_n(n):
    with pytest.raises(ValueError, match=r"Discrete\.n=.* is invalid: must be a positive integer"):
        Discrete(n)


def test_discrete_rejects_float_dtype():
    with pytest.raises(ValueError, match=r"Discrete\.dtype=float32 is invalid"):
        Discrete(3, dtype=jnp.float32)


def test_box_construction_errors():
    with pytest.raises(
        ValueError, match=r"Box\.low > Box\.high at index \(1,\).*low=2\.0, high=1\.0"
    ):
        Box(np.array([0.0, 2.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"Box\.high\[1\]=nan"):
        Box(0.0, np.array([1.0, np.nan]))
    with pytest.raises(
        ValueError, match=r"Box\.high shape \(3,\) cannot be broadcast to Box\.shape"
    ):
        Box(0.0, np.ones(3), shape=(2,))
    with pytest.raises(ValueError, match=r"Box\.low shape \(2,\) and Box\.high shape \(3,\)"):
        Box(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"Box\.shape=.* is invalid"):
        Box(0.0, 1.0, shape=(2, -1))
    with pytest.raises(ValueError, match=r"Box\.low=inf is invalid"):
        Box(np.inf, np.inf)
    with pytest.raises(ValueError, match=r"Box\.high=inf is invalid for dtype int32"):
        Box(0, np.inf, dtype=jnp.int32)


def test_box_broadcasts_and_infers_shape():
    space = Box(-1.0, np.array([1.0, 2.0, 3.0]))
    assert space.shape == (3,) and space.dtype == jnp.float32
    assert space.low.shape == (3,) and isinstance(space.low, np.ndarray)
    np.testing.assert_array_equal(space.low, [-1.0, -1.0, -1.0])
    assert Box(0.0, 1.0, (2, 3)).high.shape == (2, 3)
    assert Box(0.0, 1.0, 4).shape == (4,)
    assert Box(0.0, 1.0).shape == ()
    with pytest.raises(ValueError):
        space.low[0] = 5.0  # bounds are read-only


def test_hybrid_construction_errors_and_alias():
    with pytest.raises(ValueError, match=r"Hybrid\.spaces=\{\} is invalid"):
        Hybrid({})
    with pytest.raises(ValueError, match=r"Hybrid\.spaces\['a'\] is a int: must be a Space"):
        Hybrid({"a": 3})
    assert Dict is Hybrid
    space = Hybrid({"z": Discrete(2), "a": Box(0, 1)})
    assert list(space.spaces) == ["z", "a"]  # insertion order kept
    assert space.shape == ()


def test_spaces_are_hashable_static_args():
    a, b = Box(0.0, np.array([1.0, 2.0])), Box(0.0, np.array([1.0, 2.0]))
    assert a == b and hash(a) == hash(b) and a != Box(0.0, np.array([1.0, 3.0]))
    assert Discrete(3) == Discrete(3) and Discrete(3) != Discrete(4)
    assert _hybrid() == _hybrid() and hash(_hybrid()) == hash(_hybrid())
    clip_with = jax.jit(lambda space, x: space.clip(x), static_argnums=0)
    np.testing.assert_array_equal(clip_with(a, jnp.array([5.0, 5.0])), [1.0, 2.0])


# --------------------------------------------------------------------------------------------
# from_gymnax / flat_dim
# --------------------------------------------------------------------------------------------


def test_from_gymnax_cartpole():
    env, params = gymnax.make("CartPole-v1")
    space = from_gymnax(env.action_space(params))
    assert isinstance(space, Discrete) and space.n == 2 and space.shape == ()
    obs = from_gymnax(env.observation_space(params))
    assert isinstance(obs, Box) and obs.shape == (4,)
    obs_sample, _ = env.reset(jax.random.key(0), params)
    assert bool(obs.contains(obs_sample))


def test_from_gymnax_pendulum():
    env, params = gymnax.make("Pendulum-v1")
    space = from_gymnax(env.action_space(params))
    assert isinstance(space, Box)
    assert space.shape == (1,) and space.dtype == jnp.float32
    np.testing.assert_array_equal(space.low, [-2.0])
    np.testing.assert_array_equal(space.high, [2.0])
    np.testing.assert_array_equal(space.normalize(jnp.array([2.0])), [1.0])


def test_from_gymnax_dict_tuple_passthrough_and_errors():
    gdict = gs.Dict({"pos": gs.Box(-1.0, 1.0, (2,)), "n": gs.Discrete(5)})
    converted = from_gymnax(gdict)
    assert isinstance(converted, Hybrid) and list(converted.spaces) == ["pos", "n"]
    assert converted.spaces["n"] == Discrete(5)
    gtuple = gs.Tuple([gs.Discrete(2), gs.Box(0.0, 1.0, (3,))])
    converted = from_gymnax(gtuple)
    assert list(converted.spaces) == ["0", "1"]
    assert converted.spaces["1"] == Box(0.0, 1.0, (3,))
    ours = _hybrid()
    assert from_gymnax(ours) is ours
    with pytest.raises(TypeError, match="from_gymnax cannot convert .*str"):
        from_gymnax("Discrete(3)")


def test_flat_dim():
    assert flat_dim(Discrete(7)) == 1
    assert flat_dim(Box(0.0, 1.0, (3, 4))) == 12
    assert flat_dim(Box(0.0, 1.0)) == 1
    assert flat_dim(_hybrid()) == 2 + 4 + 1 + (2 + 1)
    assert flat_dim(gs.Box(-1.0, 1.0, (5,))) == 5
    assert isinstance(flat_dim(_hybrid()), int)


def test_all_spaces_are_space_instances():
    for space in SPACES.values():
        assert isinstance(space, Space)
