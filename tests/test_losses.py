"""Hand-worked checks of `muesli_jax.losses`.

Every expected number below was worked out by hand (the arithmetic is in the
comments) and written literally; none is recomputed with the formula under
test.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from hypothesis import given, settings
from hypothesis import strategies as st

from muesli_jax import losses

LOG2 = math.log(2.0)
LOG3 = math.log(3.0)


def f32(x):
  return jnp.asarray(x, jnp.float32)


def i32(x):
  return jnp.asarray(x, jnp.int32)


# ---------------------------------------------------------------------------
# cmpo_policy_logits


class TestCmpoPolicyLogits:

  def test_uniform_prior_two_actions_with_clip(self):
    # prior uniform, adv [2.0, -0.5] clipped to [-1, 1] -> [1.0, -0.5]
    # pi ∝ [e^1, e^-0.5] = [2.7182818, 0.6065307]; sum = 3.3248125
    # log-sum = 1.2014133 -> log pi = [1 - 1.2014133, -0.5 - 1.2014133]
    out = losses.cmpo_policy_logits(f32([0.0, 0.0]), f32([2.0, -0.5]), 1.0)
    np.testing.assert_allclose(out, [-0.2014133, -1.7014133], atol=1e-6)
    np.testing.assert_allclose(np.exp(out), [0.8175745, 0.1824255], atol=1e-6)

  def test_non_uniform_prior(self):
    # prior [0.25, 0.75] (logits [0, log 3]), adv [0.5, -0.5] (not clipped):
    # unnormalised 0.25 e^0.5 = 0.4121803, 0.75 e^-0.5 = 0.4548980,
    # sum 0.8670783 -> pi = [0.4753669, 0.5246331]
    # log pi = [-0.7436684, -0.6450561]
    out = losses.cmpo_policy_logits(f32([0.0, LOG3]), f32([0.5, -0.5]), 1.0)
    np.testing.assert_allclose(out, [-0.7436684, -0.6450561], atol=1e-6)

  def test_output_is_normalised_even_for_unnormalised_prior(self):
    # Adding a constant to the prior logits changes nothing.
    a = losses.cmpo_policy_logits(f32([0.0, 0.0]), f32([2.0, -0.5]))
    b = losses.cmpo_policy_logits(f32([7.0, 7.0]), f32([2.0, -0.5]))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(jnp.sum(jnp.exp(a)), 1.0, atol=1e-6)

  def test_clipping_bites(self):
    prior = f32([0.3, -0.2, 0.1])
    at_bound = losses.cmpo_policy_logits(prior, f32([1.0, -1.0, 0.0]), 1.0)
    beyond = losses.cmpo_policy_logits(prior, f32([5.0, -7.0, 0.0]), 1.0)
    np.testing.assert_allclose(beyond, at_bound, atol=1e-6)
    # A looser clip lets the larger advantage through: a different policy.
    loose = losses.cmpo_policy_logits(prior, f32([5.0, -7.0, 0.0]), 2.0)
    assert not np.allclose(loose, at_bound, atol=1e-3)

  def test_zero_advantages_return_prior(self):
    # pi_prior = [0.25, 0.75] -> log = [-1.3862944, -0.2876821]
    out = losses.cmpo_policy_logits(f32([0.0, LOG3]), f32([0.0, 0.0]))
    np.testing.assert_allclose(out, [-1.3862944, -0.2876821], atol=1e-6)

  def test_no_gradient(self):
    def f(prior, adv):
      return jnp.sum(losses.cmpo_policy_logits(prior, adv) * f32([1.0, 3.0]))
    g_prior, g_adv = jax.grad(f, argnums=(0, 1))(f32([0.1, 0.4]),
                                                 f32([0.2, -0.3]))
    np.testing.assert_array_equal(g_prior, [0.0, 0.0])
    np.testing.assert_array_equal(g_adv, [0.0, 0.0])

  def test_leading_batch_dims(self):
    prior = jnp.zeros([2, 3, 2], jnp.float32)
    adv = jnp.broadcast_to(f32([2.0, -0.5]), (2, 3, 2))
    out = losses.cmpo_policy_logits(prior, adv)
    assert out.shape == (2, 3, 2)
    np.testing.assert_allclose(
        out, np.broadcast_to([-0.2014133, -1.7014133], (2, 3, 2)), atol=1e-6)

  def test_bad_shapes_raise(self):
    with pytest.raises(AssertionError):
      losses.cmpo_policy_logits(jnp.zeros([3, 2]), jnp.zeros([3, 3]))

  def test_int_inputs_raise(self):
    with pytest.raises(AssertionError):
      losses.cmpo_policy_logits(jnp.zeros([2], jnp.int32), jnp.zeros([2]))


# ---------------------------------------------------------------------------
# init_adv_norm / advantage_scale / scale_advantages


class TestAdvantageNormalisation:

  def test_init(self):
    state = losses.init_adv_norm()
    assert state.second_moment.shape == () and state.decay_product.shape == ()
    assert state.second_moment.dtype == jnp.float32
    assert state.decay_product.dtype == jnp.float32
    assert float(state.second_moment) == 0.0
    assert float(state.decay_product) == 1.0

  def test_advantage_scale_hand(self):
    # debiased = 0.08 / (1 - 0.96) = 2 -> sqrt(2 + 1e-12) = 1.4142136
    state = losses.AdvNormState(f32(0.08), f32(0.96))
    np.testing.assert_allclose(losses.advantage_scale(state), 1.4142136,
                               rtol=1e-5)

  def test_advantage_scale_of_init_is_sqrt_eps(self):
    # 0 / max(1 - 1, eps) = 0 -> sqrt(0 + eps): finite, no NaN.
    np.testing.assert_allclose(
        losses.advantage_scale(losses.init_adv_norm(), eps=1e-12), 1e-6,
        rtol=1e-5)
    np.testing.assert_allclose(
        losses.advantage_scale(losses.init_adv_norm(), eps=1e-4), 1e-2,
        rtol=1e-5)

  def test_first_update_debiases_to_batch_moment(self):
    # mean(adv^2) = (1 + 4 + 9 + 0) / 4 = 3.5; sigma = sqrt(3.5) = 1.8708287
    # normed = adv / 1.8708287
    adv = f32([1.0, -2.0, 3.0, 0.0])
    normed, state = losses.scale_advantages(losses.init_adv_norm(), adv, 0.99)
    np.testing.assert_allclose(
        normed, [0.5345225, -1.0690450, 1.6035675, 0.0], rtol=1e-5)
    # EMA: 0.99 * 0 + 0.01 * 3.5 = 0.035; decay product 0.99.
    np.testing.assert_allclose(state.second_moment, 0.035, rtol=1e-5)
    np.testing.assert_allclose(state.decay_product, 0.99, rtol=1e-6)
    np.testing.assert_allclose(losses.advantage_scale(state), 1.8708287,
                               rtol=1e-5)

  def test_mask_excludes_entries(self):
    # Only 1, -2 and 0 count: mean = 5/3 -> sigma = 1.2909944.
    # Every entry (masked ones too) is divided by it.
    adv = f32([1.0, -2.0, 3.0, 0.0])
    mask = f32([1.0, 1.0, 0.0, 1.0])
    normed, _ = losses.scale_advantages(losses.init_adv_norm(), adv, 0.99,
                                        mask=mask)
    np.testing.assert_allclose(
        normed, [0.7745967, -1.5491933, 2.3237900, 0.0], rtol=1e-5)
    # The masked value has no influence at all.
    normed2, _ = losses.scale_advantages(
        losses.init_adv_norm(), f32([1.0, -2.0, 300.0, 0.0]), 0.99, mask=mask)
    np.testing.assert_allclose(normed2[:2], normed[:2], rtol=1e-6)

  def test_second_update_hand(self):
    # state after the first update: (0.035, 0.99). Batch [2, 2]: moment 4.
    # second moment = 0.99 * 0.035 + 0.01 * 4 = 0.07465
    # decay product = 0.9801; debiased = 0.07465 / 0.0199 = 3.7512563
    # sigma = 1.9368160; normed = 2 / 1.9368160 = 1.0326226
    _, state = losses.scale_advantages(losses.init_adv_norm(),
                                       f32([1.0, -2.0, 3.0, 0.0]), 0.99)
    normed, state = losses.scale_advantages(state, f32([2.0, 2.0]), 0.99)
    np.testing.assert_allclose(state.second_moment, 0.07465, rtol=1e-5)
    np.testing.assert_allclose(state.decay_product, 0.9801, rtol=1e-6)
    np.testing.assert_allclose(normed, [1.0326226, 1.0326226], rtol=1e-4)

  def test_all_masked_is_finite(self):
    normed, state = losses.scale_advantages(
        losses.init_adv_norm(), f32([1.0, 2.0]), 0.99, mask=f32([0.0, 0.0]))
    assert np.all(np.isfinite(normed))
    assert float(state.second_moment) == 0.0

  def test_leading_dims_and_no_gradient(self):
    adv = jnp.broadcast_to(f32([1.0, -2.0, 3.0, 0.0]), (3, 4))
    normed, _ = losses.scale_advantages(losses.init_adv_norm(), adv)
    assert normed.shape == (3, 4)
    np.testing.assert_allclose(
        normed[1], [0.5345225, -1.0690450, 1.6035675, 0.0], rtol=1e-5)
    grad = jax.grad(lambda a: jnp.sum(
        losses.scale_advantages(losses.init_adv_norm(), a)[0]))(adv)
    np.testing.assert_array_equal(grad, np.zeros((3, 4)))

  def test_bad_mask_shape_raises(self):
    with pytest.raises(AssertionError):
      losses.scale_advantages(losses.init_adv_norm(), jnp.zeros([4]),
                              mask=jnp.ones([3]))

  def test_pmap_axis_matches_single_device(self):
    # Two "devices" via vmap with an axis name: sums and counts are psummed,
    # so the scale is the one of the whole batch: mean(adv^2) = 3.5.
    adv = f32([[1.0, -2.0], [3.0, 0.0]])
    normed, state = jax.vmap(
        lambda a: losses.scale_advantages(losses.init_adv_norm(), a,
                                          axis_name="d"),
        axis_name="d")(adv)
    np.testing.assert_allclose(
        normed, [[0.5345225, -1.0690450], [1.6035675, 0.0]], rtol=1e-5)
    np.testing.assert_allclose(state.second_moment, [0.035, 0.035], rtol=1e-5)


# ---------------------------------------------------------------------------
# policy_loss


class PolicyLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_on_policy_no_kl(self):
    # pi = b = cmpo = [0.25, 0.75] (logits [0, log 3]); a = 1; adv = 2.
    # ratio 1, KL 0 -> loss = -2 * log 0.75 = 0.5753641
    # entropy = 0.25 log 4 + 0.75 log(4/3) = 0.5623351
    logits = f32([0.0, LOG3])
    loss, extras = self.variant(losses.policy_loss)(
        logits, logits, i32(1), f32(2.0), logits)
    np.testing.assert_allclose(loss, 0.5753641, rtol=1e-5)
    np.testing.assert_allclose(extras["pg_loss"], 0.5753641, rtol=1e-5)
    np.testing.assert_allclose(extras["importance_weight"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(extras["kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(extras["entropy"], 0.5623351, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_sign(self):
    # d/dlogits of -adv * log pi(a) = -adv * (onehot(a) - pi)
    #   = -2 * ([0, 1] - [0.25, 0.75]) = [0.5, -0.5]; KL term has zero grad.
    logits = f32([0.0, LOG3])

    def loss_fn(x):
      return self.variant(losses.policy_loss)(x, logits, i32(1), f32(2.0),
                                              logits)[0]

    grad = jax.grad(loss_fn)(logits)
    np.testing.assert_allclose(grad, [0.5, -0.5], atol=1e-5)
    assert grad[1] < 0  # a positive advantage raises log pi(a)

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_advantage_and_cmpo_equal_pi_gives_zero_gradient(self):
    logits = f32([0.3, -1.2, 0.5])

    def loss_fn(x):
      return self.variant(losses.policy_loss)(
          x, f32([0.0, 0.0, 0.0]), i32(2), f32(0.0), x)[0]

    np.testing.assert_allclose(jax.grad(loss_fn)(logits), [0.0, 0.0, 0.0],
                               atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_term(self):
    # cmpo uniform, pi = [0.25, 0.75], adv 0:
    # KL = 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.1438410; weight 2 -> 0.2876821
    # grad of KL wrt logits = pi - cmpo = [-0.25, 0.25], times 2.
    logits = f32([0.0, LOG3])
    cmpo = f32([0.0, 0.0])
    loss, extras = self.variant(losses.policy_loss)(
        logits, logits, i32(0), f32(0.0), cmpo, 2.0)
    np.testing.assert_allclose(extras["kl"], 0.1438410, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.2876821, rtol=1e-5)
    grad = jax.grad(lambda x: self.variant(losses.policy_loss)(
        x, logits, i32(0), f32(0.0), cmpo, 2.0)[0])(logits)
    np.testing.assert_allclose(grad, [-0.5, 0.5], atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_ratio_clip(self):
    # pi = [2/3, 1/3] (logits [log 2, 0]), b = [1/3, 2/3] (logits [0, log 2]).
    # a = 0: pi(a)/b(a) = 2.
    pi_logits = f32([LOG2, 0.0])
    b_logits = f32([0.0, LOG2])
    fn = self.variant(losses.policy_loss)
    # ratio_clip 1 -> weight 1, loss = -1 * 1 * log(2/3) = 0.4054651
    loss, extras = fn(pi_logits, b_logits, i32(0), f32(1.0), pi_logits, 1.0,
                      1.0)
    np.testing.assert_allclose(extras["importance_weight"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.4054651, rtol=1e-5)
    # ratio_clip 3 -> weight 2, loss = 0.8109302
    loss, extras = fn(pi_logits, b_logits, i32(0), f32(1.0), pi_logits, 1.0,
                      3.0)
    np.testing.assert_allclose(extras["importance_weight"], 2.0, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.8109302, rtol=1e-5)
    # a = 1: ratio (1/3)/(2/3) = 0.5 below the clip -> weight 0.5,
    # loss = -0.5 * log(1/3) = 0.5493061
    loss, extras = fn(pi_logits, b_logits, i32(1), f32(1.0), pi_logits, 1.0,
                      1.0)
    np.testing.assert_allclose(extras["importance_weight"], 0.5, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5493061, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_clipped_weight_gradient_is_bounded(self):
    # Weight is a constant: grad = -w * adv * (onehot(a) - pi), w = 1:
    # -1 * ([1, 0] - [2/3, 1/3]) = [-1/3, 1/3]
    pi_logits = f32([LOG2, 0.0])
    b_logits = f32([0.0, LOG2])
    grad = jax.grad(lambda x: self.variant(losses.policy_loss)(
        x, b_logits, i32(0), f32(1.0), pi_logits, 0.0, 1.0)[0])(pi_logits)
    np.testing.assert_allclose(grad, [-1 / 3, 1 / 3], atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_leading_batch_dims(self):
    logits = jnp.broadcast_to(f32([0.0, LOG3]), (2, 3, 2))
    actions = jnp.ones([2, 3], jnp.int32)
    adv = jnp.full([2, 3], 2.0, jnp.float32)
    loss, extras = self.variant(losses.policy_loss)(logits, logits, actions,
                                                    adv, logits)
    assert loss.shape == (2, 3)
    for v in extras.values():
      assert v.shape == (2, 3)
    np.testing.assert_allclose(loss, np.full([2, 3], 0.5753641), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bad_shapes_raise(self):
    fn = self.variant(losses.policy_loss)
    logits = jnp.zeros([3, 2])
    with self.assertRaises(AssertionError):  # cmpo has another shape
      fn(logits, logits, jnp.zeros([3], jnp.int32), jnp.zeros([3]),
         jnp.zeros([3, 4]))
    with self.assertRaises(AssertionError):  # actions of the wrong length
      fn(logits, logits, jnp.zeros([4], jnp.int32), jnp.zeros([4]), logits)
    with self.assertRaises(AssertionError):  # float actions
      fn(logits, logits, jnp.zeros([3]), jnp.zeros([3]), logits)


# ---------------------------------------------------------------------------
# model_policy_loss


class TestModelPolicyLoss:

  def test_masked_sum_over_k(self):
    # K = 3. Each step: model [0.25, 0.75] vs cmpo uniform, KL = 0.1438410.
    # mask [1, 1, 0] -> (2 * 0.1438410) / 3 = 0.0958940
    model = jnp.broadcast_to(f32([0.0, LOG3]), (3, 2))
    cmpo = jnp.zeros([3, 2], jnp.float32)
    out = losses.model_policy_loss(model, cmpo, f32([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(out, 0.0958940, rtol=1e-5)

  def test_masked_steps_contribute_nothing(self):
    model = jnp.broadcast_to(f32([0.0, LOG3]), (3, 2))
    cmpo = jnp.zeros([3, 2], jnp.float32)
    mask = f32([1.0, 1.0, 0.0])
    wild = model.at[2].set(f32([30.0, -30.0]))
    np.testing.assert_allclose(losses.model_policy_loss(wild, cmpo, mask),
                               0.0958940, rtol=1e-5)
    grad = jax.grad(lambda m: losses.model_policy_loss(m, cmpo, mask))(wild)
    np.testing.assert_array_equal(grad[2], [0.0, 0.0])
    # d/dlogits KL(c || softmax(m)) / K = (pi - c) / 3 = [-0.25, 0.25] / 3
    np.testing.assert_allclose(grad[0], [-0.0833333, 0.0833333], atol=1e-6)
    all_masked = losses.model_policy_loss(wild, cmpo, jnp.zeros([3]))
    np.testing.assert_allclose(all_masked, 0.0, atol=1e-7)

  def test_no_gradient_to_cmpo(self):
    model = jnp.zeros([2, 2], jnp.float32)
    grad = jax.grad(lambda c: losses.model_policy_loss(model, c, jnp.ones([2])))(
        f32([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_array_equal(grad, np.zeros([2, 2]))

  def test_leading_dims_and_bad_shapes(self):
    model = jnp.broadcast_to(f32([0.0, LOG3]), (4, 5, 3, 2))
    cmpo = jnp.zeros([4, 5, 3, 2], jnp.float32)
    mask = jnp.broadcast_to(f32([1.0, 1.0, 0.0]), (4, 5, 3))
    out = losses.model_policy_loss(model, cmpo, mask)
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out, np.full([4, 5], 0.0958940), rtol=1e-5)
    with pytest.raises(AssertionError):
      losses.model_policy_loss(model, cmpo, jnp.ones([4, 5, 2]))
    with pytest.raises(AssertionError):
      losses.model_policy_loss(model, jnp.zeros([4, 5, 3, 3]), mask)


# ---------------------------------------------------------------------------
# make_support / categorical_loss / categorical_to_scalar


def test_make_support():
  support = losses.make_support(-2.0, 2.0, 5)
  assert support.shape == (5,) and support.dtype == jnp.float32
  np.testing.assert_array_equal(support, [-2.0, -1.0, 0.0, 1.0, 2.0])
  wide = losses.make_support(-30.0, 30.0, 61)
  assert wide.shape == (61,)
  np.testing.assert_allclose(wide[:3], [-30.0, -29.0, -28.0], atol=1e-5)
  np.testing.assert_allclose(wide[29:32], [-1.0, 0.0, 1.0], atol=1e-5)
  np.testing.assert_allclose(wide[-1], 30.0, atol=1e-5)


SUPPORT5 = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32)


def _target_probs(scalar):
  """The two-hot target, read off the gradient at uniform logits.

  grad of CE wrt logits = softmax(logits) - target = 0.2 - target.
  """
  grad = jax.grad(lambda l: losses.categorical_loss(l, f32(scalar),
                                                    jnp.asarray(SUPPORT5)))(
                                                        jnp.zeros([5]))
  return 0.2 - np.asarray(grad)


class TestCategoricalLoss:
  # logits [0, 0, 0, 0, log 2] -> p = [1, 1, 1, 1, 2] / 6
  LOGITS = f32([0.0, 0.0, 0.0, 0.0, LOG2])

  def test_target_on_bin_centre(self):
    # h(0) = 0 -> all mass on the middle bin: CE = -log(1/6) = 1.7917595
    ce = losses.categorical_loss(self.LOGITS, f32(0.0), jnp.asarray(SUPPORT5))
    np.testing.assert_allclose(ce, 1.7917595, rtol=1e-5)
    np.testing.assert_allclose(_target_probs(0.0), [0, 0, 1, 0, 0], atol=1e-5)

  def test_target_between_bins(self):
    # h(3) = sign(3)(sqrt(4) - 1) + 0.001 * 3 = 1.003:
    # 0.997 on bin value 1 (index 3), 0.003 on bin value 2 (index 4).
    # CE = 0.997 * log 6 + 0.003 * log 3 = 1.7863842 + 0.0032958 = 1.7896800
    ce = losses.categorical_loss(self.LOGITS, f32(3.0), jnp.asarray(SUPPORT5))
    np.testing.assert_allclose(ce, 1.7896800, atol=1e-4)
    np.testing.assert_allclose(_target_probs(3.0), [0, 0, 0, 0.997, 0.003],
                               atol=1e-4)

  def test_negative_target(self):
    # h(-3) = -1.003: 0.997 on value -1 (index 1), 0.003 on value -2 (index 0)
    np.testing.assert_allclose(_target_probs(-3.0), [0.003, 0.997, 0, 0, 0],
                               atol=1e-4)

  def test_target_beyond_support_is_clipped(self):
    # h(100) = sqrt(101) - 1 + 0.1 = 9.15 > 2: all mass on the top bin.
    np.testing.assert_allclose(_target_probs(100.0), [0, 0, 0, 0, 1],
                               atol=1e-5)
    ce = losses.categorical_loss(self.LOGITS, f32(100.0),
                                 jnp.asarray(SUPPORT5))
    np.testing.assert_allclose(ce, 1.0986123, rtol=1e-5)  # -log(2/6)

  def test_eps_changes_the_transform(self):
    # eps = 0.1: h(3) = 1 + 0.3 = 1.3 -> 0.7 on value 1, 0.3 on value 2.
    grad = jax.grad(lambda l: losses.categorical_loss(
        l, f32(3.0), jnp.asarray(SUPPORT5), eps=0.1))(jnp.zeros([5]))
    np.testing.assert_allclose(0.2 - grad, [0, 0, 0, 0.7, 0.3], atol=1e-4)

  def test_no_gradient_to_targets(self):
    g = jax.grad(lambda t: losses.categorical_loss(
        self.LOGITS, t, jnp.asarray(SUPPORT5)))(f32(3.0))
    assert float(g) == 0.0

  def test_leading_dims(self):
    logits = jnp.broadcast_to(self.LOGITS, (2, 3, 5))
    targets = jnp.broadcast_to(f32([0.0, 3.0, 100.0]), (2, 3))
    ce = losses.categorical_loss(logits, targets, jnp.asarray(SUPPORT5))
    assert ce.shape == (2, 3)
    np.testing.assert_allclose(
        ce, np.broadcast_to([1.7917595, 1.7896800, 1.0986123], (2, 3)),
        atol=1e-4)

  def test_bad_shapes_raise(self):
    support = jnp.asarray(SUPPORT5)
    with pytest.raises(ValueError):  # 4 bins vs a 5-bin support
      losses.categorical_loss(jnp.zeros([3, 4]), jnp.zeros([3]), support)
    with pytest.raises(AssertionError):  # batch prefix mismatch
      losses.categorical_loss(jnp.zeros([3, 5]), jnp.zeros([2]), support)
    with pytest.raises(AssertionError):  # logits rank != targets rank + 1
      losses.categorical_loss(jnp.zeros([5]), jnp.zeros([3]), support)


class TestCategoricalToScalar:

  def test_hand_values(self):
    support = jnp.asarray(SUPPORT5)
    # uniform over a symmetric support: E[h] = 0 -> h^-1(0) = 0 (up to the
    # float32 cancellation in rlax.signed_parabolic, ~6e-5 near 0)
    np.testing.assert_allclose(
        losses.categorical_to_scalar(jnp.zeros([5]), support), 0.0, atol=1e-3)
    # p = [0, 0, 0, 0.997, 0.003]: E[h] = 0.997 + 0.006 = 1.003 = h(3) -> 3
    logits = jnp.log(f32([0.0, 0.0, 0.0, 0.997, 0.003]))
    np.testing.assert_allclose(losses.categorical_to_scalar(logits, support),
                               3.0, atol=1e-3)
    # mirrored: E[h] = -1.003 -> -3
    logits = jnp.log(f32([0.003, 0.997, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(losses.categorical_to_scalar(logits, support),
                               -3.0, atol=1e-3)

  def test_other_support(self):
    # h(15) = sqrt(16) - 1 + 0.015 = 3.015: support -4..4 step 1,
    # p = 0.985 on value 3, 0.015 on value 4 -> E[h] = 2.955 + 0.06 = 3.015
    support = losses.make_support(-4.0, 4.0, 9)
    p = np.zeros(9, np.float32)
    p[7], p[8] = 0.985, 0.015
    np.testing.assert_allclose(
        losses.categorical_to_scalar(jnp.log(p), support), 15.0, atol=1e-2)

  def test_leading_dims(self):
    out = losses.categorical_to_scalar(jnp.zeros([2, 3, 5]),
                                       jnp.asarray(SUPPORT5))
    assert out.shape == (2, 3)


_WIDE_SUPPORT = losses.make_support(-30.0, 30.0, 61)


@jax.jit
def _round_trip(x):
  two_hot = rlax.transform_to_2hot(rlax.signed_hyperbolic(x), -30.0, 30.0, 61)
  # softmax(log(p + 1e-12)) = p up to ~1e-12 per bin.
  return losses.categorical_to_scalar(jnp.log(two_hot + 1e-12), _WIDE_SUPPORT)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=-500.0, max_value=500.0, allow_nan=False,
                 width=32))
def test_categorical_to_scalar_round_trip(x):
  recovered = float(_round_trip(f32(x)))
  assert abs(recovered - x) <= 1e-2 * abs(x) + 1e-3, (x, recovered)


# ---------------------------------------------------------------------------
# retrace_targets / nstep_targets


# T = 3. Times 1..3: v = [10, 20, 40], r = [1, 2, 3] and discount
# [0.5, 0.5, 0.5] received on arriving there; times 1..2: q = [4, 8].
Q = [4.0, 8.0]
V = [10.0, 20.0, 40.0]
R = [1.0, 2.0, 3.0]
D = [0.5, 0.5, 0.5]
A_T = [0, 1]
UNIFORM = np.zeros([2, 2], np.float32)


class RetraceTest(chex.TestCase):

  def _retrace(self, lambda_, discount=D, pi=UNIFORM, mu=UNIFORM,
               trace_mask=None, q=Q):
    fn = self.variant(losses.retrace_targets)
    kwargs = {}
    if trace_mask is not None:
      kwargs["trace_mask_t"] = f32(trace_mask)
    return fn(f32(q), f32(V), f32(R), f32(discount), f32(pi), f32(mu),
              i32(A_T), lambda_, **kwargs)

  @chex.variants(with_jit=True, without_jit=True)
  def test_lambda_one_on_policy(self):
    # c = 1 everywhere.
    # G2 = r2 + d2 v3 = 3 + 0.5 * 40 = 23
    # G1 = r1 + d1 (v2 - q2 + G2) = 2 + 0.5 (20 - 8 + 23) = 19.5
    # G0 = r0 + d0 (v1 - q1 + G1) = 1 + 0.5 (10 - 4 + 19.5) = 13.75
    np.testing.assert_allclose(self._retrace(1.0), [13.75, 19.5, 23.0],
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_lambda_zero_is_one_step(self):
    # c = 0: G = r + d v_next = [1 + 5, 2 + 10, 3 + 20]
    np.testing.assert_allclose(self._retrace(0.0), [6.0, 12.0, 23.0],
                               rtol=1e-6)

  def test_q_at_time_t_is_refused(self):
    # Nothing is read at time T but v: a q (or pi, mu, a) there is a
    # time-indexing mistake, not an input to ignore.
    with self.assertRaisesRegex(ValueError, "one shorter"):
      losses.retrace_targets(f32([4.0, 8.0, 999.0]), f32(V), f32(R), f32(D),
                             f32(np.zeros([3, 2])), f32(np.zeros([3, 2])),
                             i32([0, 1, 0]), 1.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_off_policy_truncated_traces(self):
    # lambda 0.5, mu uniform, pi at time 1 = [0.25, 0.75], time 2 = [0.25, 0.75].
    # time 1, a = 0: min(1, 0.25 / 0.5) = 0.5 -> c1 = 0.25
    # time 2, a = 1: min(1, 0.75 / 0.5) = 1   -> c2 = 0.5
    # G2 = 23
    # G1 = 2 + 0.5 (20 - 0.5 * 8 + 0.5 * 23) = 2 + 0.5 * 27.5 = 15.75
    # G0 = 1 + 0.5 (10 - 0.25 * 4 + 0.25 * 15.75) = 1 + 0.5 * 12.9375 = 7.46875
    pi = np.array([[0.0, LOG3], [0.0, LOG3]], np.float32)
    np.testing.assert_allclose(self._retrace(0.5, pi=pi),
                               [7.46875, 15.75, 23.0], rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_termination_cuts_bootstrap(self):
    # discount [0.5, 0, 0.5]: transition 1 terminates.
    # G2 = 23; G1 = 2 + 0 = 2; G0 = 1 + 0.5 (10 - 4 + 2) = 5
    np.testing.assert_allclose(self._retrace(1.0, discount=[0.5, 0.0, 0.5]),
                               [5.0, 2.0, 23.0], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_trace_mask_cuts_trace(self):
    # trace_mask at time 2 is 0 -> c2 = 0:
    # G2 = 23; G1 = 2 + 0.5 * 20 = 12; G0 = 1 + 0.5 (10 - 4 + 12) = 10
    np.testing.assert_allclose(
        self._retrace(1.0, trace_mask=[1.0, 0.0]), [10.0, 12.0, 23.0],
        rtol=1e-6)
    # trace_mask at time 1 is 0 -> c1 = 0: G1 = 19.5, G0 = 1 + 0.5 * 10 = 6
    np.testing.assert_allclose(
        self._retrace(1.0, trace_mask=[0.0, 1.0]), [6.0, 19.5, 23.0],
        rtol=1e-6)
    # all ones changes nothing
    np.testing.assert_allclose(
        self._retrace(1.0, trace_mask=[1.0, 1.0]), [13.75, 19.5, 23.0],
        rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_gradient(self):
    fn = self.variant(losses.retrace_targets)
    grad = jax.grad(lambda v: jnp.sum(fn(f32(Q), v, f32(R), f32(D),
                                         f32(UNIFORM), f32(UNIFORM),
                                         i32(A_T), 1.0)))(f32(V))
    np.testing.assert_array_equal(grad, [0.0, 0.0, 0.0])

  @chex.variants(with_jit=True, without_jit=True)
  def test_bad_inputs_raise(self):
    fn = self.variant(losses.retrace_targets)
    with self.assertRaises(AssertionError):  # float actions
      fn(f32(Q), f32(V), f32(R), f32(D), f32(UNIFORM), f32(UNIFORM),
         f32(A_T), 1.0)
    with self.assertRaises(AssertionError):  # batched input: vmap instead
      fn(f32([Q]), f32([V]), f32([R]), f32([D]), f32([UNIFORM]),
         f32([UNIFORM]), i32([A_T]), 1.0)
    with self.assertRaises(AssertionError):  # T mismatch
      fn(f32(Q), f32(V[:2]), f32(R), f32(D), f32(UNIFORM), f32(UNIFORM),
         i32(A_T), 1.0)

  def test_vmap_over_batch(self):
    batch = lambda x: jnp.stack([f32(x), f32(x)])
    out = jax.vmap(lambda *a: losses.retrace_targets(*a, 1.0))(
        batch(Q), batch(V), batch(R), f32([D, [0.5, 0.0, 0.5]]),
        batch(UNIFORM), batch(UNIFORM), jnp.stack([i32(A_T), i32(A_T)]))
    np.testing.assert_allclose(out, [[13.75, 19.5, 23.0], [5.0, 2.0, 23.0]],
                               rtol=1e-6)


class TestNstepTargets:

  def test_hand_sums(self):
    # G2 = 3 + 0.5 * 40 = 23; G1 = 2 + 0.5 * 23 = 13.5; G0 = 1 + 0.5 * 13.5
    out = losses.nstep_targets(f32([100.0, -100.0, 40.0]), f32(R), f32(D))
    np.testing.assert_allclose(out, [7.75, 13.5, 23.0], rtol=1e-6)

  def test_only_last_value_is_used(self):
    out = losses.nstep_targets(f32([0.0, 0.0, 40.0]), f32(R), f32(D))
    np.testing.assert_allclose(out, [7.75, 13.5, 23.0], rtol=1e-6)

  def test_termination(self):
    # discount [0.5, 0, 0.5]: G1 = 2, G0 = 1 + 0.5 * 2 = 2
    out = losses.nstep_targets(f32(V), f32(R), f32([0.5, 0.0, 0.5]))
    np.testing.assert_allclose(out, [2.0, 2.0, 23.0], rtol=1e-6)

  def test_discount_one(self):
    # undiscounted: G2 = 3 + 40 = 43, G1 = 45, G0 = 46
    out = losses.nstep_targets(f32(V), f32(R), f32([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(out, [46.0, 45.0, 43.0], rtol=1e-6)

  def test_no_gradient_and_bad_shapes(self):
    grad = jax.grad(lambda v: jnp.sum(losses.nstep_targets(v, f32(R),
                                                           f32(D))))(f32(V))
    np.testing.assert_array_equal(grad, [0.0, 0.0, 0.0])
    with pytest.raises(AssertionError):
      losses.nstep_targets(f32(V[:2]), f32(R), f32(D))
    with pytest.raises(AssertionError):
      losses.nstep_targets(f32([V]), f32([R]), f32([D]))
