"""Muesli losses: pure functions over arrays, usable like `rlax` functions.

Hessel et al. 2021, "Muesli: Combining Improvements in Policy Optimization"
(arXiv 2104.06159 v2). Every function here is pure and jittable, accepts
leading batch dimensions where stated, and holds no state: the advantage
normaliser is an explicit `AdvNormState` passed in and returned.

Shapes: `A` actions, `K` model unroll steps, `N` support bins, `T` time steps;
`...` any leading batch dimensions.
"""

from typing import NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import rlax

Array = chex.Array


def cmpo_policy_logits(prior_logits: Array, advantages: Array,
                       clip: float = 1.0) -> Array:
  """Logits of the clipped MPO target policy (Muesli Sec. 4, Eq. 10).

  `pi_cmpo(a|s) ∝ pi_prior(a|s) · exp(clip(adv(s, a), -c, c))`.

  Args:
    prior_logits: `[..., A]` logits of the prior policy.
    advantages: `[..., A]` normalised advantages of every action.
    clip: the bound `c` on the advantages.

  Returns:
    `[..., A]` normalised log-probabilities of `pi_cmpo` (no gradient flows
    through them: they are a target).
  """
  chex.assert_equal_shape([prior_logits, advantages])
  chex.assert_type([prior_logits, advantages], float)
  logits = jax.nn.log_softmax(prior_logits) + jnp.clip(advantages, -clip, clip)
  return jax.lax.stop_gradient(jax.nn.log_softmax(logits))


class AdvNormState(NamedTuple):
  """Running, bias-corrected estimate of the advantages' second moment."""
  second_moment: Array  # [] EMA of E[adv^2], not yet bias-corrected.
  decay_product: Array  # [] decay^num_updates, for Adam-style debiasing.


def init_adv_norm() -> AdvNormState:
  """The advantage normaliser before any update."""
  return AdvNormState(second_moment=jnp.zeros([], jnp.float32),
                      decay_product=jnp.ones([], jnp.float32))


def advantage_scale(state: AdvNormState, eps: float = 1e-12) -> Array:
  """`sigma = sqrt(debiased E[adv^2] + eps)` (Muesli Sec. 4.5); `[]`."""
  debiased = state.second_moment / jnp.maximum(1.0 - state.decay_product, eps)
  return jnp.sqrt(debiased + eps)


def scale_advantages(
    state: AdvNormState,
    advantages: Array,
    decay: float = 0.99,
    eps: float = 1e-12,
    mask: Optional[Array] = None,
    axis_name: Optional[str] = None,
) -> Tuple[Array, AdvNormState]:
  """Updates the running `E[adv^2]` with this batch, then divides by its sqrt.

  Muesli Sec. 4.5: advantages are normalised by a moving estimate of their
  scale, with decay `beta` and Adam-style bias correction. The batch mean is
  taken over `mask`ed entries and, under `pmap`, over all devices (sums and
  counts are `psum`ed, so two devices give exactly the one-device result).

  Args:
    state: the normaliser state.
    advantages: `[...]` unnormalised advantages, e.g. `G^v - v_prior`.
    decay: the EMA decay `beta`.
    eps: added to the variance before the square root.
    mask: optional `[...]` weights (1 valid, 0 ignored).
    axis_name: the `pmap` axis to reduce over, if any.

  Returns:
    `([...] normalised advantages, new state)`.
  """
  chex.assert_type(advantages, float)
  advantages = jax.lax.stop_gradient(advantages)
  if mask is None:
    mask = jnp.ones_like(advantages)
  chex.assert_equal_shape([advantages, mask])
  total = jnp.sum(jnp.square(advantages) * mask)
  count = jnp.sum(mask)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = jax.lax.psum(count, axis_name)
  batch_moment = total / jnp.maximum(count, 1.0)
  new_state = AdvNormState(
      second_moment=decay * state.second_moment + (1 - decay) * batch_moment,
      decay_product=state.decay_product * decay)
  return advantages / advantage_scale(new_state, eps), new_state


def policy_loss(
    logits: Array,
    behaviour_logits: Array,
    actions: Array,
    advantages: Array,
    cmpo_logits: Array,
    kl_weight: float = 1.0,
    ratio_clip: float = 1.0,
) -> Tuple[Array, dict]:
  """L_pg+cmpo, Muesli Eq. 9: clipped off-policy PG plus KL to `pi_cmpo`.

  `L = -clip(pi(a|s)/b(a|s), 0, c) · adv(s, a) · log pi(a|s)
       + kl_weight · KL(pi_cmpo(.|s) || pi(.|s))`

  The importance weight is a constant (stop-gradient) truncated at
  `ratio_clip`: where the ratio is below the clip this has the gradient of the
  paper's `-ratio · adv`, above it the gradient stays bounded instead of
  vanishing.

  Args:
    logits: `[..., A]` online policy logits (differentiated).
    behaviour_logits: `[..., A]` logits of the policy that acted.
    actions: `[...]` int, the actions taken.
    advantages: `[...]` normalised advantages of the taken actions.
    cmpo_logits: `[..., A]` target policy logits (from `cmpo_policy_logits`).
    kl_weight: `lambda`, the weight of the regulariser.
    ratio_clip: upper bound of the importance weight.

  Returns:
    `([...] loss, extras)` where extras holds the importance weight, the KL
    and the policy entropy, each `[...]`.
  """
  chex.assert_equal_shape([logits, behaviour_logits, cmpo_logits])
  chex.assert_equal_shape_prefix([logits, actions, advantages], actions.ndim)
  chex.assert_rank(actions, logits.ndim - 1)
  chex.assert_type([logits, behaviour_logits, advantages, cmpo_logits], float)
  chex.assert_type(actions, int)
  log_pi = jax.nn.log_softmax(logits)
  log_b = jax.nn.log_softmax(behaviour_logits)
  log_pi_a = jnp.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
  log_b_a = jnp.take_along_axis(log_b, actions[..., None], axis=-1)[..., 0]
  ratio = jax.lax.stop_gradient(jnp.exp(log_pi_a - log_b_a))
  weight = jnp.clip(ratio, 0.0, ratio_clip)
  pg_loss = -weight * jax.lax.stop_gradient(advantages) * log_pi_a
  kl = rlax.categorical_kl_divergence(jax.lax.stop_gradient(cmpo_logits),
                                      logits)
  entropy = -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)
  extras = dict(importance_weight=weight, kl=kl, entropy=entropy,
                pg_loss=pg_loss)
  return pg_loss + kl_weight * kl, extras


def model_policy_loss(model_logits: Array, cmpo_logits: Array,
                      mask: Array) -> Array:
  """L_m, Muesli Sec. 4.2: `(1/K) sum_k KL(pi_cmpo(s_{t+k}) || pi_k(s_t))`.

  Args:
    model_logits: `[..., K, A]` policy logits predicted after unrolling the
      model k = 1..K steps from `s_t` with the actions taken.
    cmpo_logits: `[..., K, A]` `pi_cmpo` logits at the real states `s_{t+k}`.
    mask: `[..., K]` 1 where `s_{t+k}` is in the same episode as `s_t`.

  Returns:
    `[...]` the loss, the masked sum over k divided by K.
  """
  chex.assert_equal_shape([model_logits, cmpo_logits])
  chex.assert_equal_shape([model_logits[..., 0], mask])
  chex.assert_type([model_logits, cmpo_logits, mask], float)
  kl = rlax.categorical_kl_divergence(jax.lax.stop_gradient(cmpo_logits),
                                      model_logits)
  return jnp.sum(kl * mask, axis=-1) / mask.shape[-1]


def make_support(min_value: float, max_value: float, num_bins: int) -> Array:
  """`[N]` evenly spaced bin centres in h-transformed space."""
  return jnp.linspace(min_value, max_value, num_bins, dtype=jnp.float32)


def categorical_loss(logits: Array, scalar_targets: Array, support: Array,
                     eps: float = 1e-3) -> Array:
  """Cross-entropy to the two-hot encoding of `h(target)` (MuZero App. F).

  `h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps·x`; the target is projected onto
  the two nearest bins of `support`.

  Args:
    logits: `[..., N]` predicted logits over the support.
    scalar_targets: `[...]` untransformed scalar targets (no gradient).
    support: `[N]` evenly spaced bin centres in h-transformed space.
    eps: the `eps` of `h`.

  Returns:
    `[...]` cross-entropy.
  """
  chex.assert_rank(support, 1)
  chex.assert_equal_shape_prefix([logits, scalar_targets], scalar_targets.ndim)
  chex.assert_rank(logits, scalar_targets.ndim + 1)
  chex.assert_type([logits, scalar_targets], float)
  num_bins = support.shape[0]
  if logits.shape[-1] != num_bins:
    raise ValueError(f"logits have {logits.shape[-1]} bins, support {num_bins}")
  transformed = rlax.signed_hyperbolic(
      jax.lax.stop_gradient(scalar_targets), eps)
  target_probs = rlax.transform_to_2hot(transformed, support[0], support[-1],
                                        num_bins)
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits), axis=-1)


def categorical_to_scalar(logits: Array, support: Array,
                          eps: float = 1e-3) -> Array:
  """Expected value of a categorical head, mapped back through `h^-1`.

  Args:
    logits: `[..., N]` logits over the support.
    support: `[N]` bin centres in h-transformed space.
    eps: the `eps` of `h`.

  Returns:
    `[...]` scalar values in the environment's units.
  """
  chex.assert_rank(support, 1)
  transformed = jnp.sum(jax.nn.softmax(logits) * support, axis=-1)
  return rlax.signed_parabolic(transformed, eps)


def retrace_targets(
    q_t: Array,
    v_t: Array,
    r_t: Array,
    discount_t: Array,
    pi_t: Array,
    mu_t: Array,
    a_t: Array,
    lambda_: float = 0.95,
    trace_mask_t: Optional[Array] = None,
) -> Array:
  """Retrace value targets (Munos et al. 2016) as used by Muesli (Eq. 14).

  `G_s = r_s + γ_s (v_{s+1} - c_{s+1} q_{s+1} + c_{s+1} G_{s+1})`, with
  `c = lambda · min(1, pi(a)/mu(a))`, bootstrapped with `v` at the end. In
  Muesli `q = r̂ + γ v̂(s')` comes from the model's one-step look-ahead and
  `v` from the value head, both with the prior params.

  One time-major sequence of `T` transitions; vmap over the batch. Inputs
  indexed `_t` describe times `1..T` (the state after each transition),
  except `r_t` and `discount_t`, which belong to transitions `0..T-1`.

  Args:
    q_t: `[T]` q of the action taken at times 1..T (the last is unused).
    v_t: `[T]` values at times 1..T.
    r_t: `[T]` rewards of transitions 0..T-1.
    discount_t: `[T]` discounts of transitions 0..T-1 (0 at termination).
    pi_t: `[T, A]` target-policy logits at times 1..T.
    mu_t: `[T, A]` behaviour-policy logits at times 1..T.
    a_t: `[T]` int actions taken at times 1..T.
    lambda_: the trace decay.
    trace_mask_t: optional `[T]`, 0 where the transition out of time t is
      not a real one (e.g. the reset step after an episode end), which cuts
      the trace there.

  Returns:
    `[T]` targets for the states at times 0..T-1, without gradient.
  """
  chex.assert_rank([q_t, v_t, r_t, discount_t, pi_t, mu_t, a_t],
                   [1, 1, 1, 1, 2, 2, 1])
  chex.assert_type([q_t, v_t, r_t, discount_t, pi_t, mu_t], float)
  chex.assert_type(a_t, int)
  chex.assert_equal_shape([q_t, v_t, r_t, discount_t, a_t])
  log_pi_a = jnp.take_along_axis(jax.nn.log_softmax(pi_t), a_t[:, None], -1)
  log_mu_a = jnp.take_along_axis(jax.nn.log_softmax(mu_t), a_t[:, None], -1)
  c_t = lambda_ * jnp.minimum(1.0, jnp.exp(log_pi_a - log_mu_a))[:, 0]
  if trace_mask_t is not None:
    c_t = c_t * trace_mask_t
  returns = rlax.general_off_policy_returns_from_q_and_v(
      q_t[:-1], v_t, r_t, discount_t, c_t[:-1])
  return jax.lax.stop_gradient(returns)


def nstep_targets(v_t: Array, r_t: Array, discount_t: Array,
                  trace_mask_t: Optional[Array] = None) -> Array:
  """Uncorrected multi-step returns to the end of the sequence.

  `G_s = r_s + γ_s G_{s+1}`, bootstrapped with `v` at the last time, and
  with `v_{s+1}` wherever `trace_mask_t` cuts the sequence (e.g. at the
  final observation of a truncated episode).

  Args:
    v_t: `[T]` values at times 1..T.
    r_t: `[T]` rewards of transitions 0..T-1.
    discount_t: `[T]` discounts of transitions 0..T-1.
    trace_mask_t: optional `[T]`, 0 at times 1..T where the return is cut
      and bootstrapped.

  Returns:
    `[T]` targets for the states at times 0..T-1, without gradient.
  """
  chex.assert_rank([v_t, r_t, discount_t], 1)
  chex.assert_equal_shape([v_t, r_t, discount_t])
  if trace_mask_t is None:
    trace_mask_t = jnp.ones_like(v_t)
  chex.assert_equal_shape([v_t, trace_mask_t])
  return rlax.lambda_returns(r_t, discount_t, v_t, trace_mask_t,
                             stop_target_gradients=True)
