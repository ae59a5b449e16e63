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
import numpy as np
import rlax

# The forms of L_pg (see `policy_loss`), named with the hyperparameters.
from muesli_jax.hparams import POLICY_GRADIENT_FORMS

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


def categorical_kl(p_logits: Array, q_logits: Array) -> Array:
  """`KL(p || q)` between categoricals given by logits; `[..., A] -> [...]`.

  Gradients flow into both arguments (stop them where one is a target). An
  action with `p = 0` (a logit of -inf) adds 0, whatever `q` gives it.
  """
  chex.assert_equal_shape([p_logits, q_logits])
  log_p = jax.nn.log_softmax(p_logits)
  p = jnp.exp(log_p)
  log_ratio = jnp.where(p == 0, 0.0, log_p - jax.nn.log_softmax(q_logits))
  return jnp.sum(p * log_ratio, axis=-1)


def prior_mixture_log_probs(prior_logits: Array, behaviour_logits: Array,
                            target_weight: float = 0.967,
                            behaviour_weight: float = 0.03,
                            uniform_weight: float = 0.003) -> Array:
  """Log-probabilities of the CMPO prior mixed with the behaviour policy and
  the uniform one (Muesli App. F.2); `[..., A]`.

  The mixture keeps every action's prior probability above zero, so CMPO
  can still move mass to an action the target network has all but ruled
  out. The weights must sum to 1.

  Args:
    prior_logits: `[..., A]` logits of the prior (target-network) policy.
    behaviour_logits: `[..., A]` logits of the policy that acted.
    target_weight, behaviour_weight, uniform_weight: the mixture weights.
  """
  chex.assert_equal_shape([prior_logits, behaviour_logits])
  chex.assert_type([prior_logits, behaviour_logits], float)
  total = target_weight + behaviour_weight + uniform_weight
  if abs(total - 1.0) > 1e-6:
    raise ValueError(f"the mixture weights must sum to 1, got {total}")
  num_actions = prior_logits.shape[-1]
  mixed = (target_weight * jax.nn.softmax(prior_logits) +
           behaviour_weight * jax.nn.softmax(behaviour_logits) +
           uniform_weight / num_actions)
  return jnp.log(mixed)


def all_action_advantages(q: Array, v: Array, scale: Array) -> Array:
  """`(q(s, a) - v(s)) / sigma` for every action (Muesli Eq. 10 with the
  normalisation of Sec. 4.5): the advantages CMPO reweights the prior by.

  Args:
    q: `[..., A]` action values, e.g. the model's one-step look-ahead.
    v: `[...]` state values.
    scale: `[]` or `[...]` the advantage scale, e.g. `advantage_scale`.

  Returns:
    `[..., A]`, without gradient (a target).
  """
  chex.assert_rank(q, v.ndim + 1)
  chex.assert_equal_shape_prefix([q, v], v.ndim)
  chex.assert_type([q, v], float)
  scale = jnp.asarray(scale)
  if scale.ndim:
    scale = scale[..., None]
  return jax.lax.stop_gradient((q - v[..., None]) / scale)


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
    form: str = "truncated_is",
) -> Tuple[Array, dict]:
  """L_pg+cmpo (Muesli Eq. 9): an off-policy policy gradient plus the KL of
  the policy to `pi_cmpo` (Eq. 10), `L = L_pg + kl_weight · KL(pi_cmpo || pi)`.

  Two forms of `L_pg` with `rho = pi(a|s) / b(a|s)` and `c = ratio_clip`:

  - `"truncated_is"` (the default): `-sg(clip(rho, 0, c)) · adv · log pi(a|s)`,
    IMPALA's truncated importance-weighted gradient. It learned LunarLander
    faster than the surrogate in a 5-seed ablation. Below the clip its
    gradient is the surrogate's, `-rho · adv · ∇log pi`; above it the
    gradient stays `-c · adv · ∇log pi` instead of vanishing.
  - `"surrogate"`: `-clip(rho, 0, c) · adv`, the paper's Eq. 9 as written:
    the gradient flows through `rho` and is zero where `rho > c`.

  Args:
    logits: `[..., A]` online policy logits (differentiated).
    behaviour_logits: `[..., A]` logits of the policy that acted.
    actions: `[...]` int, the actions taken.
    advantages: `[...]` normalised advantages of the taken actions.
    cmpo_logits: `[..., A]` target policy logits (from `cmpo_policy_logits`).
    kl_weight: `lambda`, the weight of the regulariser.
    ratio_clip: `c`, the upper bound of the importance weight.
    form: `"truncated_is"` or `"surrogate"`, see above.

  Returns:
    `([...] loss, extras)` where extras holds the (clipped) importance
    weight, the KL, the policy entropy and `L_pg`, each `[...]`.
  """
  if form not in POLICY_GRADIENT_FORMS:
    raise ValueError(f"form must be one of {POLICY_GRADIENT_FORMS}, got "
                     f"{form!r}")
  chex.assert_equal_shape([logits, behaviour_logits, cmpo_logits])
  chex.assert_equal_shape_prefix([logits, actions, advantages], actions.ndim)
  chex.assert_rank(actions, logits.ndim - 1)
  chex.assert_type([logits, behaviour_logits, advantages, cmpo_logits], float)
  chex.assert_type(actions, int)
  log_pi = jax.nn.log_softmax(logits)
  log_b = jax.nn.log_softmax(behaviour_logits)
  log_pi_a = jnp.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
  log_b_a = jnp.take_along_axis(log_b, actions[..., None], axis=-1)[..., 0]
  pg_loss, weight = _importance_weighted_pg(log_pi_a, log_b_a, advantages,
                                            ratio_clip, form)
  kl = categorical_kl(jax.lax.stop_gradient(cmpo_logits), logits)
  entropy = -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)
  extras = dict(importance_weight=weight, kl=kl, entropy=entropy,
                pg_loss=pg_loss)
  return pg_loss + kl_weight * kl, extras


def _importance_weighted_pg(log_pi_a: Array, log_b_a: Array,
                            advantages: Array, ratio_clip: float,
                            form: str) -> Tuple[Array, Array]:
  """`L_pg` of `policy_loss` from log-probabilities of the taken actions:
  `([...] loss, [...] clipped importance weight without gradient)`."""
  advantages = jax.lax.stop_gradient(advantages)
  log_b_a = jax.lax.stop_gradient(log_b_a)
  if form == "truncated_is":
    weight = jnp.clip(jax.lax.stop_gradient(jnp.exp(log_pi_a - log_b_a)), 0.0,
                      ratio_clip)
    return -weight * advantages * log_pi_a, weight
  weight = jnp.clip(jnp.exp(log_pi_a - log_b_a), 0.0, ratio_clip)
  return -weight * advantages, jax.lax.stop_gradient(weight)


def sampled_cmpo_weights(advantages: Array, clip: float = 1.0,
                         z_init: float = 1.0) -> Array:
  """Weights of `N` actions sampled from the prior in the sampled CMPO
  regulariser (Muesli Sec. 4.2, continuous actions); `[..., N] -> [..., N]`.

  With `a_i ~ pi_prior(.|s)` and `w_i = exp(clip(adv(s, a_i), -c, c))`, the
  paper estimates `KL(pi_cmpo || pi) ≈ const - (1/N) Σ_i (w_i / z_i) log pi(a_i|s)`
  with the leave-one-out normaliser `z_i = (z_init + Σ_{j≠i} w_j) / N`. This
  returns `omega_i = (1/N) w_i / z_i = w_i / (z_init + Σ_{j≠i} w_j)`, so that
  the estimate is `-Σ_i omega_i log pi(a_i|s)`. Leaving `w_i` out of its own
  normaliser keeps a sample from dividing by itself; `z_init` stands for the
  prior's mass outside the samples. The omegas sum to about 1 and are each
  below `e^c` (with `z_init = 1`).

  Args:
    advantages: `[..., N]` normalised advantages of the sampled actions.
    clip: `c`.
    z_init: the normaliser's initial value (1 in the paper).

  Returns:
    `[..., N]` weights, without gradient.
  """
  chex.assert_type(advantages, float)
  w = jnp.exp(jnp.clip(jax.lax.stop_gradient(advantages), -clip, clip))
  others = jnp.sum(w, axis=-1, keepdims=True) - w
  return jax.lax.stop_gradient(w / (z_init + others))


def sampled_cmpo_log_probs(prior_log_probs: Array, advantages: Array,
                           clip: float = 1.0) -> Array:
  """`log pi_cmpo(a_i|s)` of `N` actions sampled from the prior (Eq. 10):
  `log pi_prior(a_i|s) + clip(adv_i, -c, c) - log Ẑ(s)`, with the normaliser
  estimated from the same samples, `Ẑ(s) = (1/N) Σ_j exp(clip(adv_j, -c, c))`.

  Only the value of the sampled KL needs it (`sampled_kl`); the gradient
  does not. `[..., N]`, without gradient.
  """
  chex.assert_equal_shape([prior_log_probs, advantages])
  clipped = jnp.clip(advantages, -clip, clip)
  log_z = jax.nn.logsumexp(clipped, axis=-1, keepdims=True) - jnp.log(
      advantages.shape[-1])
  return jax.lax.stop_gradient(prior_log_probs + clipped - log_z)


def sampled_kl(log_probs: Array, weights: Array,
               target_log_probs: Optional[Array] = None) -> Array:
  """The sampled estimate of `KL(pi_cmpo || pi)`; `[..., N] -> [...]`.

  `Σ_i omega_i (log pi_cmpo(a_i) - log pi(a_i))` with `omega` from
  `sampled_cmpo_weights`. Its gradient is that of the paper's estimate
  `-Σ_i omega_i log pi(a_i)`; `target_log_probs` (`sampled_cmpo_log_probs`)
  only make its value a KL (0 when `pi = pi_cmpo`). Without them the value
  is the cross-entropy.

  Args:
    log_probs: `[..., N]` `log pi(a_i|s)` (differentiated).
    weights: `[..., N]` `omega_i`.
    target_log_probs: optional `[..., N]` `log pi_cmpo(a_i|s)`.
  """
  chex.assert_equal_shape([log_probs, weights])
  chex.assert_type([log_probs, weights], float)
  if target_log_probs is None:
    target_log_probs = jnp.zeros_like(log_probs)
  chex.assert_equal_shape([log_probs, target_log_probs])
  return jnp.sum(jax.lax.stop_gradient(weights) * (
      jax.lax.stop_gradient(target_log_probs) - log_probs), axis=-1)


def sampled_policy_loss(
    log_pi_a: Array,
    log_b_a: Array,
    advantages: Array,
    sample_log_probs: Array,
    sample_weights: Array,
    sample_target_log_probs: Optional[Array] = None,
    kl_weight: float = 1.0,
    ratio_clip: float = 1.0,
    form: str = "truncated_is",
) -> Tuple[Array, dict]:
  """L_pg+cmpo for any policy given as log-probabilities, with the KL to
  `pi_cmpo` estimated from `N` actions sampled from the prior (Muesli
  Sec. 4.2): the form for continuous actions.

  `L = L_pg + kl_weight · sampled_kl(...)`, `L_pg` as in `policy_loss`.

  Args:
    log_pi_a: `[...]` online `log pi(a|s)` of the taken actions
      (differentiated).
    log_b_a: `[...]` behaviour `log b(a|s)` of the taken actions.
    advantages: `[...]` normalised advantages of the taken actions.
    sample_log_probs: `[..., N]` online `log pi(a_i|s)` of the prior's
      samples (differentiated).
    sample_weights: `[..., N]` from `sampled_cmpo_weights`.
    sample_target_log_probs: optional `[..., N]` from
      `sampled_cmpo_log_probs`, for the KL's value.
    kl_weight, ratio_clip, form: as in `policy_loss`.

  Returns:
    `([...] loss, extras)` with the clipped importance weight, the sampled
    KL and `L_pg`, each `[...]`.
  """
  if form not in POLICY_GRADIENT_FORMS:
    raise ValueError(f"form must be one of {POLICY_GRADIENT_FORMS}, got "
                     f"{form!r}")
  chex.assert_equal_shape([log_pi_a, log_b_a, advantages])
  chex.assert_equal_shape_prefix([log_pi_a, sample_log_probs], log_pi_a.ndim)
  chex.assert_rank(sample_log_probs, log_pi_a.ndim + 1)
  chex.assert_type([log_pi_a, log_b_a, advantages], float)
  pg_loss, weight = _importance_weighted_pg(log_pi_a, log_b_a, advantages,
                                            ratio_clip, form)
  kl = sampled_kl(sample_log_probs, sample_weights, sample_target_log_probs)
  extras = dict(importance_weight=weight, kl=kl, pg_loss=pg_loss)
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
  kl = categorical_kl(jax.lax.stop_gradient(cmpo_logits), model_logits)
  return jnp.sum(kl * mask, axis=-1) / mask.shape[-1]


def make_support(min_value: float, max_value: float, num_bins: int) -> Array:
  """`[N]` evenly spaced bin centres in h-transformed space."""
  return jnp.linspace(min_value, max_value, num_bins, dtype=jnp.float32)


def check_uniform_support(support: Array) -> None:
  """Raises `ValueError` unless `support` is evenly spaced and increasing.

  `categorical_loss` projects onto bins from the support's end points alone,
  so an uneven support would disagree with `categorical_to_scalar`. Only a
  concrete support can be checked: a traced one (built inside `jit`) passes.
  """
  if isinstance(support, jax.core.Tracer):
    return
  values = np.asarray(support, np.float64)
  if values.size < 2:
    raise ValueError(f"support needs at least 2 bins, got {values.size}")
  gaps = np.diff(values)
  if not (np.all(gaps > 0) and
          np.allclose(gaps, gaps[0], rtol=1e-4, atol=1e-6 * np.abs(values).max())):
    raise ValueError("support must be evenly spaced and increasing (e.g. "
                     "make_support), got gaps from "
                     f"{gaps.min():.4g} to {gaps.max():.4g}")


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
  check_uniform_support(support)
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

  `G_s = r_{s+1} + γ_{s+1} (v_{s+1} - c_{s+1} q_{s+1} + c_{s+1} G_{s+1})`,
  with `c = lambda · min(1, pi(a)/mu(a))` and `G_{T-1} = r_T + γ_T v_T`. In
  Muesli `q = r̂ + γ v̂(s')` comes from the model's one-step look-ahead and
  `v` from the value head, both with the prior params.

  One time-major sequence of states `0..T`; vmap over a batch. Every input
  is indexed by the time it belongs to, as in `rlax`: `r_t` and
  `discount_t` are the reward and discount received on arriving at time t
  (the transition t-1 -> t), the others are read at state t. Nothing is
  needed at time 0, and at time T only `v`, `r` and `discount`:

      time        0      1      2     ...    T-1      T
      r, γ               r_1    r_2   ...    r_{T-1}  r_T     [T]
      v                  v_1    v_2   ...    v_{T-1}  v_T     [T]
      q, π, μ, a, mask   x_1    x_2   ...    x_{T-1}          [T-1]
      returned    G_0    G_1    ...   G_{T-1}                 [T]

  Args:
    q_t: `[T-1]` q of the action taken at times 1..T-1.
    v_t: `[T]` values at times 1..T.
    r_t: `[T]` rewards received on arriving at times 1..T.
    discount_t: `[T]` discounts received on arriving at times 1..T (0 where
      the transition into t terminated the episode).
    pi_t: `[T-1, A]` target-policy logits at times 1..T-1.
    mu_t: `[T-1, A]` behaviour-policy logits at times 1..T-1.
    a_t: `[T-1]` int actions taken at times 1..T-1.
    lambda_: the trace decay.
    trace_mask_t: optional `[T-1]`, 0 where the transition out of time t is
      not a real one (e.g. the reset step after an episode end), which cuts
      the trace there.

  Returns:
    `[T]` targets for the states at times 0..T-1, without gradient.
  """
  chex.assert_rank([q_t, v_t, r_t, discount_t, pi_t, mu_t, a_t],
                   [1, 1, 1, 1, 2, 2, 1])
  chex.assert_type([q_t, v_t, r_t, discount_t, pi_t, mu_t], float)
  chex.assert_type(a_t, int)
  chex.assert_equal_shape([v_t, r_t, discount_t])
  chex.assert_equal_shape([q_t, a_t, pi_t[:, 0], mu_t[:, 0]])
  if q_t.shape[0] != v_t.shape[0] - 1:
    raise ValueError(f"q_t, pi_t, mu_t and a_t cover times 1..T-1 ({q_t.shape[0]}"
                     f" steps), v_t, r_t and discount_t times 1..T "
                     f"({v_t.shape[0]}): the first must be one shorter")
  log_pi_a = jnp.take_along_axis(jax.nn.log_softmax(pi_t), a_t[:, None], -1)
  log_mu_a = jnp.take_along_axis(jax.nn.log_softmax(mu_t), a_t[:, None], -1)
  return retrace_targets_from_log_probs(q_t, v_t, r_t, discount_t,
                                        log_pi_a[:, 0], log_mu_a[:, 0],
                                        lambda_, trace_mask_t)


def retrace_targets_from_log_probs(
    q_t: Array,
    v_t: Array,
    r_t: Array,
    discount_t: Array,
    log_pi_a_t: Array,
    log_mu_a_t: Array,
    lambda_: float = 0.95,
    trace_mask_t: Optional[Array] = None,
) -> Array:
  """`retrace_targets` for any policy, e.g. a Gaussian over continuous
  actions: the taken actions enter only through their log-probabilities.

  Same time indexing as `retrace_targets`; `log_pi_a_t` and `log_mu_a_t`
  are `[T-1]`, `log pi(a_t|s_t)` and `log mu(a_t|s_t)` at times 1..T-1.
  """
  chex.assert_rank([q_t, v_t, r_t, discount_t, log_pi_a_t, log_mu_a_t], 1)
  chex.assert_type([q_t, v_t, r_t, discount_t, log_pi_a_t, log_mu_a_t], float)
  chex.assert_equal_shape([v_t, r_t, discount_t])
  chex.assert_equal_shape([q_t, log_pi_a_t, log_mu_a_t])
  if q_t.shape[0] != v_t.shape[0] - 1:
    raise ValueError(f"q_t and the log-probs cover times 1..T-1 "
                     f"({q_t.shape[0]} steps), v_t, r_t and discount_t times "
                     f"1..T ({v_t.shape[0]}): the first must be one shorter")
  c_t = lambda_ * jnp.minimum(1.0, jnp.exp(log_pi_a_t - log_mu_a_t))
  if trace_mask_t is not None:
    chex.assert_equal_shape([q_t, trace_mask_t])
    c_t = c_t * trace_mask_t
  returns = rlax.general_off_policy_returns_from_q_and_v(
      q_t, v_t, r_t, discount_t, c_t)
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
