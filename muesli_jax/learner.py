"""The Muesli learner: a `TrainState` pytree and a pure `update` function.

Hessel et al. 2021, "Muesli: Combining Improvements in Policy Optimization"
(arXiv 2104.06159). `make_update(networks, hparams)`, with the
`hparams.LearnerHparams` of the run, returns
`update(state, batch) -> (state, metrics)`. Wrap it in `jax.jit` on one
device, or in `jax.pmap(update, axis_name=AXIS)` over several: sums and
counts are `psum`ed over `AXIS`, so every device sees the loss of the global
batch and the result equals the one-device update on the same batch.

The update is built from module-level pure functions, in the order it runs:
`prior_targets` (with `lookahead_q`, `value_targets`,
`mixed_prior_log_probs`) computes a `Targets` with the prior params; `loss`
sums `policy_loss_term`, `model_loss_term`, `value_loss_term` and
`reward_loss_term` over the masks of `unroll_masks`.

The policies are distributions (`networks.policy(policy_logits)`: `sample`,
`log_prob`, `entropy`, `mode`, `lookahead_actions`). The one choice left is
the estimator of pi_cmpo, made by `prior_targets` and followed by `loss`.
A policy that can enumerate its actions (the categorical one) gets exact
CMPO over all of them (Eq. 11-12); a continuous one (`networks.action_dim
= D > 0`) sampled CMPO (Muesli Sec. 4.2): at every state, `S =
hparams.action_samples` actions are drawn from the prior policy and looked
ahead with the model; their normalised advantages weight them
(`losses.sampled_cmpo_weights`) in the KL of the policy loss and of the
model loss (`sampled_policy_loss_term`, `sampled_model_loss_term`);
Retrace's expectation of q under the prior is their mean.

Shapes: `B` sequences, `T` learning positions, `K` unroll steps,
`W = T + K + 1` window steps, `A` actions, `N` support bins, `H` hidden size.
"""

import functools
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax

from muesli_jax import losses
from muesli_jax.hparams import LearnerHparams
from muesli_jax.networks import MuesliNetworks
from muesli_jax.types import Batch

AXIS = "devices"
Array = chex.Array


class TrainState(NamedTuple):
  params: hk.Params
  target_params: hk.Params
  opt_state: optax.OptState
  adv_norm: losses.AdvNormState
  step: chex.Array


def make_optimizer(hparams: LearnerHparams) -> optax.GradientTransformation:
  """Adam whose update is clipped to ±1 before the learning rate (App. F.1)."""
  if hparams.lr_decay:  # Linear decay to 0 over the run (Sec. 4.5).
    lr = optax.linear_schedule(hparams.learning_rate, 0.0,
                               hparams.lr_decay_updates)
  else:
    lr = hparams.learning_rate
  return optax.chain(optax.scale_by_adam(eps=hparams.adam_eps),
                     optax.clip(hparams.update_clip),
                     optax.add_decayed_weights(hparams.weight_decay),
                     optax.scale_by_learning_rate(lr))


def init_state(networks: MuesliNetworks, hparams: LearnerHparams,
               rng) -> TrainState:
  params = networks.init(rng)
  # A separate copy: the update donates both trees.
  return TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                    opt_state=make_optimizer(hparams).init(params),
                    adv_norm=losses.init_adv_norm(),
                    step=jnp.zeros([], jnp.int32))


class Targets(NamedTuple):
  """What the loss needs from the prior params; a constant for the gradient.

  `T` learning positions, `W = T + K + 1` window steps, `A` actions; for
  continuous actions `S` samples from the prior of `D` dimensions each,
  and `cmpo_logits` is None.
  """
  returns: Array  # [B, W-1] value targets for steps 0..T+K-1
  pg_adv: Array  # [B, T] normalised advantage of the action taken
  cmpo_logits: Optional[Array]  # [B, W, A] log pi_cmpo at every step
  v_prior: Array  # [B, W] prior value
  sigma: Array  # [] advantage scale after this batch (Sec. 4.5)
  adv_mask: Array  # [B, T] 1 where the advantage entered the scale estimate
  q_prior: Array  # [B, W, A] (or [B, W, S]) one-step look-ahead (Eq. 14)
  sample_actions: Optional[Array] = None  # [B, W, S, D] drawn from the prior
  sample_weights: Optional[Array] = None  # [B, W, S] sampled CMPO weights
  sample_log_cmpo: Optional[Array] = None  # [B, W, S] log pi_cmpo of each


def _psum(x, axis_name: Optional[str]):
  return jax.lax.psum(x, axis_name) if axis_name else x


def _support(networks: MuesliNetworks, hparams: LearnerHparams) -> Array:
  """`[N]` bin centres of the value and reward heads."""
  return losses.make_support(hparams.value_min, hparams.value_max,
                             networks.num_bins)


def _flat_apply(fn, params, x, *args):
  """Applies `fn` to `[B, W, ...]` inputs by folding B and W together."""
  lead = x.shape[:2]
  out = fn(params, x.reshape((-1,) + x.shape[2:]),
           *[a.reshape((-1,) + a.shape[2:]) for a in args])
  return jax.tree.map(lambda y: y.reshape(lead + y.shape[1:]), out)


def _sliding(x, length: int, count: int):
  """`[B, W, ...] -> [B, count, length, ...]`, windows starting at 0..count-1."""
  idx = jnp.arange(count)[:, None] + jnp.arange(length)[None, :]
  return x[:, idx]


def one_step_lookahead(networks: MuesliNetworks, params: hk.Params,
                       hidden: Array, discount: float, support: Array) -> Array:
  """`q(s, a) = r̂(s, a) + γ v̂(s')` for every action (Muesli Eq. 14).

  Args:
    networks: the Muesli networks.
    params: the params to look ahead with (the prior's, in the update).
    hidden: `[B, W, H]` hidden states.
    discount: `γ`.
    support: `[N]` bin centres of the reward and value heads.

  Returns:
    `q [B, W, A]`.
  """
  A = networks.num_actions
  B, W = hidden.shape[:2]
  actions = jnp.broadcast_to(jnp.arange(A), (B, W, A))
  return lookahead_q(networks, params, hidden, actions, discount, support)


def lookahead_q(networks: MuesliNetworks, params: hk.Params, hidden: Array,
                actions: Array, discount: float, support: Array) -> Array:
  """`q(s, a) = r̂(s, a) + γ v̂(s')` for `M` given actions from each state.

  Args:
    hidden: `[B, W, H]` hidden states.
    actions: `[B, W, M]` int, or `[B, W, M, D]` continuous actions.

  Returns:
    `q [B, W, M]`.
  """
  B, W, M = actions.shape[:3]
  # Every action from every state as one [B, W*M] batch of dynamics steps.
  hidden_a = jnp.repeat(hidden[:, :, None], M, axis=2).reshape(
      (B, W * M) + hidden.shape[2:])
  next_hidden, reward_logits = _flat_apply(
      networks.dynamics, params, hidden_a,
      actions.reshape((B, W * M) + actions.shape[3:]))
  next_out = _flat_apply(networks.predict, params, next_hidden)
  q = (losses.categorical_to_scalar(reward_logits, support) +
       discount * losses.categorical_to_scalar(next_out.value_logits, support))
  return q.reshape((B, W, M))


def value_targets(hparams: LearnerHparams, batch: Batch,
                  q_consistent: Array, v_prior: Array, log_pi_a: Array,
                  log_mu_a: Array) -> Array:
  """Value targets `G` for steps 0..T+K-1, by `hparams.value_target`.

  "retrace" (Muesli Eq. 14, from the model's q and the value head), "nstep"
  (uncorrected returns bootstrapped from the value head) or "mc" (the
  episode's discounted return, `batch.mc_return`).

  Args:
    hparams: the learner's.
    batch: the `[B, W]` windows.
    q_consistent: `[B, W]` prior look-ahead q of the action taken, shifted
      per state so that its mean under the prior policy is `v_prior`:
      Retrace assumes v = E_pi[q], and the model's q and the value head need
      not agree (a gap between them compounds along the trace). `E_pi[q]`
      is exact over all actions, or the mean over actions sampled from the
      prior.
    v_prior: `[B, W]` prior values.
    log_pi_a, log_mu_a: `[B, W]` prior and behaviour log-probabilities of
      the action taken.

  Returns:
    `[B, W-1]` targets, without gradient.
  """
  if hparams.value_target != "retrace":
    return _uncorrected_targets(hparams, batch, v_prior)
  return _retrace(hparams, batch, q_consistent, v_prior, log_pi_a, log_mu_a)


def _retrace(hparams: LearnerHparams, batch: Batch, q_taken: Array,
             v_prior: Array, log_pi_a: Array, log_mu_a: Array) -> Array:
  """Retrace targets `[B, W-1]` from `[B, W]` q, v and log-probabilities of
  the actions taken (`losses.retrace_targets_from_log_probs`, vmapped)."""
  discount_t = hparams.discount * batch.discount
  return jax.vmap(lambda q, v, r, d, lp, lm, m:
                  losses.retrace_targets_from_log_probs(
                      q, v, r, d, lp, lm, hparams.retrace_lambda,
                      trace_mask_t=m))(
      q_taken[:, 1:-1], v_prior[:, 1:], batch.reward[:, :-1],
      discount_t[:, :-1], log_pi_a[:, 1:-1], log_mu_a[:, 1:-1],
      batch.mask[:, 1:-1])


def _uncorrected_targets(hparams: LearnerHparams, batch: Batch,
                         v_prior: Array) -> Array:
  """The "nstep" and "mc" targets, which need no policy."""
  if hparams.value_target == "nstep":
    return jax.vmap(losses.nstep_targets)(
        v_prior[:, 1:], batch.reward[:, :-1],
        hparams.discount * batch.discount[:, :-1], batch.mask[:, 1:])
  return batch.mc_return[:, :-1]


def mixed_prior_log_probs(hparams: LearnerHparams, prior_logits: Array,
                          behaviour_logits: Array) -> Array:
  """`[..., A]` `losses.prior_mixture_log_probs` with the weights of
  `hparams` (App. F.2)."""
  return losses.prior_mixture_log_probs(
      prior_logits, behaviour_logits, hparams.prior_mix_target,
      hparams.prior_mix_behaviour, hparams.prior_mix_uniform)


def prior_targets(networks: MuesliNetworks, hparams: LearnerHparams,
                  target_params: hk.Params, batch: Batch,
                  adv_norm: losses.AdvNormState,
                  axis_name: Optional[str] = None,
                  support: Optional[Array] = None,
                  rng: Optional[Array] = None
                  ) -> Tuple[Targets, losses.AdvNormState]:
  """Everything computed with the prior params: returns, advantages, CMPO.

  From every state of the window the prior policy's `lookahead_actions` are
  looked ahead with the model (Eq. 14). A policy that can enumerate its
  actions (`enumerable`, the categorical one) gives all `A` of them and
  exact CMPO over them (Eq. 11-12, with the prior mixture of App. F.2).
  Otherwise (continuous actions) `S = hparams.action_samples` actions are
  drawn from the prior with `rng` and give sampled CMPO (Sec. 4.2): their
  normalised advantages weight them (`losses.sampled_cmpo_weights`) and
  Retrace's `E_prior[q]` is their mean.

  Also advances the advantage normaliser (Muesli Sec. 4.5) with this batch's
  `E[(G - v_prior)^2]`, over all devices when `axis_name` is given.
  `support` defaults to the one of `hparams` (see `make_update` for why it
  passes its own).
  """
  if support is None:
    support = _support(networks, hparams)
  hidden = _flat_apply(networks.represent, target_params, batch.observation)
  prior = _flat_apply(networks.predict, target_params, hidden)
  v_prior = losses.categorical_to_scalar(prior.value_logits, support)
  prior_pi = networks.policy(prior.policy_logits)
  candidates = prior_pi.lookahead_actions(rng, hparams.action_samples)
  M = candidates.shape[2]
  taken = batch.action[:, :, None]
  # The look-ahead (Eq. 14): M dynamics steps a state, and the taken action.
  if prior_pi.enumerable:  # The taken action is one of the candidates.
    q_prior = lookahead_q(networks, target_params, hidden, candidates,
                          hparams.discount, support)  # [B, W, A]
    q_taken = jnp.take_along_axis(q_prior, taken, -1)[..., 0]
    expected_q = jnp.sum(prior_pi.probs() * q_prior, -1)
    q_consistent = q_taken + (v_prior - expected_q)
  else:
    q_all = lookahead_q(networks, target_params, hidden,
                        jnp.concatenate([candidates, taken], 2),
                        hparams.discount, support)
    q_prior, q_taken = q_all[..., :M], q_all[..., M]  # [B, W, S], [B, W]
    # The same shift as above, in the order of operations the continuous
    # results were obtained with (their float rounding is kept).
    q_consistent = q_taken + v_prior - jnp.mean(q_prior, axis=-1)
  behaviour_pi = networks.policy(batch.behaviour_logits)
  returns = value_targets(hparams, batch, q_consistent, v_prior,
                          prior_pi.log_prob(batch.action),
                          behaviour_pi.log_prob(batch.action))
  pg_adv, adv_mask, adv_norm, sigma = _taken_advantages(
      hparams, batch, returns, v_prior, adv_norm, axis_name)
  adv = losses.all_action_advantages(q_prior, v_prior, sigma)  # [B, W, M]
  targets = Targets(returns=returns, pg_adv=pg_adv, cmpo_logits=None,
                    v_prior=v_prior, sigma=sigma, adv_mask=adv_mask,
                    q_prior=q_prior)
  # pi_cmpo: exact over all actions, or sampled.
  if prior_pi.enumerable:
    return targets._replace(cmpo_logits=losses.cmpo_policy_logits(
        mixed_prior_log_probs(hparams, prior.policy_logits,
                              batch.behaviour_logits),
        adv, hparams.cmpo_clip)), adv_norm
  log_prior = networks.policy(prior.policy_logits[:, :, None]).log_prob(
      candidates)  # [B, W, S]
  return targets._replace(
      sample_actions=candidates,
      sample_weights=losses.sampled_cmpo_weights(adv, hparams.cmpo_clip),
      sample_log_cmpo=losses.sampled_cmpo_log_probs(
          log_prior, adv, hparams.cmpo_clip)), adv_norm


def _taken_advantages(hparams: LearnerHparams, batch: Batch, returns: Array,
                      v_prior: Array, adv_norm: losses.AdvNormState,
                      axis_name: Optional[str]):
  """`(pg_adv [B, T], adv_mask [B, T], adv_norm, sigma)`: the normalised
  advantages `G - v_prior` of the taken actions, and the advanced scale."""
  T = hparams.sequence_length
  # The scale is estimated over the learning positions only.
  adv_mask = batch.mask[:, :T]
  if hparams.value_target == "mc":
    adv_mask = adv_mask * batch.mc_valid[:, :T]
  pg_adv, adv_norm = losses.scale_advantages(
      adv_norm, returns[:, :T] - v_prior[:, :T], hparams.adv_norm_decay,
      mask=adv_mask, axis_name=axis_name)
  return pg_adv, adv_mask, adv_norm, losses.advantage_scale(adv_norm)


def unroll_masks(batch: Batch, K: int, T: int) -> Tuple[Array, Array]:
  """Which model steps have a real target: `(valid, absorbing)`, `[B, T, K+1]`.

  `valid[b, t, k]` is 1 iff steps t..t+k are all real (the same episode).
  `absorbing[b, t, k]` is 1 iff an episode ended before step t+k: there the
  model is trained on an absorbing state (value and reward 0), so that
  look-aheads into episode ends see a true zero.
  """
  valid = jnp.cumprod(_sliding(batch.mask, K + 1, T), axis=-1)
  terminated = valid * (1.0 - _sliding(batch.discount, K + 1, T))
  absorbing = jnp.minimum(jnp.cumsum(terminated, axis=-1), 1.0)
  absorbing = jnp.pad(absorbing[..., :-1], ((0, 0), (0, 0), (1, 0)))
  return valid, absorbing


def _without_unknown_pg(hparams: LearnerHparams, pg: Array,
                        extras: Dict[str, Array], batch: Batch) -> Array:
  """With the "mc" target, positions whose return is unknown get no policy
  gradient (the KL to pi_cmpo stays)."""
  if hparams.value_target != "mc":
    return pg
  T = pg.shape[1]
  return pg - extras["pg_loss"] * (1.0 - batch.mc_valid[:, :T])


def policy_loss_term(hparams: LearnerHparams, policy_logits: Array,
                     batch: Batch, targets: Targets
                     ) -> Tuple[Array, Dict[str, Array]]:
  """L_pg+cmpo at k = 0 (Muesli Sec. 4, Eq. 9) with exact CMPO: `([B, T]
  loss, extras)`.

  `policy_logits` are the online `[B, T, A]` logits at the real states; with
  the "mc" target, positions whose return is unknown get no policy gradient
  (the KL to pi_cmpo stays).
  """
  T = policy_logits.shape[1]
  pg, extras = losses.policy_loss(
      policy_logits, batch.behaviour_logits[:, :T], batch.action[:, :T],
      targets.pg_adv, targets.cmpo_logits[:, :T], hparams.kl_weight,
      hparams.ratio_clip, hparams.policy_gradient)
  return _without_unknown_pg(hparams, pg, extras, batch), extras


def sampled_policy_loss_term(hparams: LearnerHparams, policy: Callable,
                             policy_logits: Array, batch: Batch,
                             targets: Targets
                             ) -> Tuple[Array, Dict[str, Array]]:
  """`policy_loss_term` with sampled CMPO (Muesli Sec. 4.2): the KL to
  pi_cmpo is estimated from the prior's samples (`losses.sampled_kl`).

  Args:
    hparams: the learner's.
    policy: `networks.policy`, `[..., 2D]` -> the policy distribution.
    policy_logits: the online `[B, T, 2D]` policy at the real states.
    batch, targets: with `sample_actions`, `sample_weights` and
      `sample_log_cmpo`.
  """
  T = policy_logits.shape[1]
  action = batch.action[:, :T]
  pi = policy(policy_logits)
  pg, extras = losses.sampled_policy_loss(
      pi.log_prob(action), policy(batch.behaviour_logits[:, :T]).log_prob(
          action), targets.pg_adv,
      policy(policy_logits[:, :, None]).log_prob(
          targets.sample_actions[:, :T]),
      targets.sample_weights[:, :T], targets.sample_log_cmpo[:, :T],
      hparams.kl_weight, hparams.ratio_clip, hparams.policy_gradient)
  extras["entropy"] = pi.entropy()
  return _without_unknown_pg(hparams, pg, extras, batch), extras


def model_loss_term(model_logits: Array, cmpo_logits: Array,
                    valid: Array) -> Array:
  """L_m (Muesli Sec. 4.2): the model's policy after k steps toward pi_cmpo.

  Args:
    model_logits: `[B, T, K, A]` policy logits after unrolling k = 1..K.
    cmpo_logits: `[B, W, A]` `Targets.cmpo_logits`, at the real states.
    valid: `[B, T, K+1]` from `unroll_masks`.

  Returns:
    `[B, T]`, the masked sum over k divided by K.
  """
  T, K = model_logits.shape[1:3]
  cmpo_k = _sliding(cmpo_logits[:, 1:], K, T)  # [B, T, K, A] at s_{t+k}
  return losses.model_policy_loss(model_logits, cmpo_k, valid[..., 1:])


def sampled_model_loss_term(policy: Callable, model_policy: Array,
                            targets: Targets, valid: Array) -> Array:
  """L_m with sampled CMPO: `model_loss_term` with the KL to pi_cmpo at
  `s_{t+k}` estimated from the prior's samples there (`losses.sampled_kl`).

  Args:
    policy: `networks.policy`, `[..., 2D]` -> the policy distribution.
    model_policy: `[B, T, K, 2D]` policy after unrolling k = 1..K.
    targets: with `sample_actions`, `sample_weights`, `sample_log_cmpo`.
    valid: `[B, T, K+1]` from `unroll_masks`.

  Returns:
    `[B, T]`, the masked sum over k divided by K.
  """
  T, K = model_policy.shape[1:3]
  at_k = lambda x: _sliding(x[:, 1:], K, T)  # [B, T, K, S, ...] at s_{t+k}
  log_probs = policy(model_policy[..., None, :]).log_prob(
      at_k(targets.sample_actions))
  kl = losses.sampled_kl(log_probs, at_k(targets.sample_weights),
                         at_k(targets.sample_log_cmpo))  # [B, T, K]
  return jnp.sum(kl * valid[..., 1:], axis=-1) / K


def value_loss_term(value_logits: Array, model_value_logits: Array,
                    returns: Array, valid: Array, absorbing: Array,
                    support: Array, mc_valid: Optional[Array] = None) -> Array:
  """L_v over k = 0..K, model learning (Muesli Sec. 4.2, as in MuZero).

  Args:
    value_logits: `[B, T, N]` the value head at the real states (k = 0).
    model_value_logits: `[B, T, K, N]` after unrolling the model k = 1..K.
    returns: `[B, W-1]` `Targets.returns`.
    valid, absorbing: `[B, T, K+1]` from `unroll_masks`; absorbing steps are
      trained toward 0.
    support: `[N]` bin centres.
    mc_valid: `[B, W]` for the "mc" target: 1 where the return is known.

  Returns:
    `[B, T]`, the masked sum over k divided by K+1.
  """
  T, K1 = valid.shape[1:3]
  returns_k = jnp.where(valid > 0, _sliding(returns, K1, T), 0.0)
  mask = valid + absorbing
  if mc_valid is not None:
    mask = mask * jnp.maximum(_sliding(mc_valid, K1, T), absorbing)
  all_logits = jnp.concatenate([value_logits[:, :, None], model_value_logits],
                               axis=2)  # [B, T, K+1, N]
  return jnp.sum(losses.categorical_loss(all_logits, returns_k, support)
                 * mask, -1) / K1


def reward_loss_term(reward_logits: Array, reward: Array, valid: Array,
                     absorbing: Array, support: Array) -> Array:
  """L_r over k = 1..K, model learning (Muesli Sec. 4.2, as in MuZero).

  Args:
    reward_logits: `[B, T, K, N]`, the reward of model step k predicting the
      transition out of real step t+k-1.
    reward: `[B, W]` `batch.reward`.
    valid, absorbing: `[B, T, K+1]` from `unroll_masks`; absorbing steps are
      trained toward 0.
    support: `[N]` bin centres.

  Returns:
    `[B, T]`, the masked sum over k divided by K.
  """
  T, K = reward_logits.shape[1:3]
  rewards_k = jnp.where(valid[..., :K] > 0, _sliding(reward, K, T), 0.)
  return jnp.sum(losses.categorical_loss(reward_logits, rewards_k, support)
                 * (valid[..., :K] + absorbing[..., :K]), -1) / K


def loss(networks: MuesliNetworks, hparams: LearnerHparams, params: hk.Params,
         batch: Batch, targets: Targets, axis_name: Optional[str] = None,
         support: Optional[Array] = None) -> Tuple[Array, Dict[str, Array]]:
  """The Muesli loss of `params` on `batch`: `(scalar, metrics)`.

  A mean over the real learning positions of the global batch: under `pmap`
  each device divides its own sum by the `psum`ed count, so the gradients'
  `psum` is the gradient of the global mean. `support` as in `prior_targets`.
  """
  K, T = hparams.unroll_steps, hparams.sequence_length
  B = batch.action.shape[0]
  if support is None:
    support = _support(networks, hparams)
  hidden = _flat_apply(networks.represent, params,
                       batch.observation[:, :T])  # [B, T, H]
  out0 = _flat_apply(networks.predict, params, hidden)
  outk, reward_logits = _flat_apply(networks.unroll, params, hidden,
                                    _sliding(batch.action, K, T))

  valid, absorbing = unroll_masks(batch, K, T)
  position = valid[..., 0]
  count = jnp.maximum(_psum(jnp.sum(position), axis_name), 1.0)

  def mean(x):
    return jnp.sum(x * position) / count

  if targets.cmpo_logits is not None:  # Exact CMPO (see `prior_targets`).
    pg, extras = policy_loss_term(hparams, out0.policy_logits, batch, targets)
    model_policy = model_loss_term(outk.policy_logits, targets.cmpo_logits,
                                   valid)
  else:
    pg, extras = sampled_policy_loss_term(hparams, networks.policy,
                                          out0.policy_logits, batch, targets)
    model_policy = sampled_model_loss_term(networks.policy, outk.policy_logits,
                                           targets, valid)
  value = value_loss_term(
      out0.value_logits, outk.value_logits, targets.returns, valid, absorbing,
      support, batch.mc_valid if hparams.value_target == "mc" else None)
  reward = reward_loss_term(reward_logits, batch.reward, valid, absorbing,
                            support)

  # An optional entropy bonus (not in the paper) keeps exploration alive on
  # small control tasks where the policy otherwise collapses early.
  total = (hparams.pg_weight * pg + hparams.model_weight * model_policy +
           hparams.value_weight * value + hparams.reward_weight * reward -
           hparams.entropy_weight * extras["entropy"])
  metrics = dict(
      loss=mean(total), policy_loss=mean(pg), model_loss=mean(model_policy),
      value_loss=mean(value), reward_loss=mean(reward),
      kl_cmpo=mean(extras["kl"]), entropy=mean(extras["entropy"]),
      importance_weight=mean(extras["importance_weight"]),
      value_pred=mean(losses.categorical_to_scalar(out0.value_logits,
                                                   support)),
      value_target=mean(targets.returns[:, :T]),
      valid_fraction=count / _psum(jnp.asarray(B * T, jnp.float32),
                                   axis_name))
  return metrics["loss"], metrics


def make_update(networks: MuesliNetworks, hparams: LearnerHparams,
                axis_name: Optional[str] = None):
  """Returns the pure update `(state, batch) -> (state, metrics)`.

  For continuous actions the prior's samples are drawn from
  `fold_in(PRNGKey(hparams.seed), step)`, and the device index under `pmap`.
  """
  optimizer = make_optimizer(hparams)
  # Built here, outside the trace: inside it XLA constant-folds the linspace
  # and rounds some bin centres differently in the last bit.
  support = _support(networks, hparams)
  grad_fn = jax.grad(functools.partial(loss, networks, hparams,
                                       axis_name=axis_name, support=support),
                     has_aux=True)

  def update(state: TrainState, batch: Batch) -> Tuple[TrainState, Dict]:
    # The prior's samples, where it has to sample its look-ahead actions: a
    # function of the step (and the device), so a resumed run draws the
    # same ones. Unused (and compiled away) for discrete actions.
    rng = jax.random.fold_in(jax.random.PRNGKey(hparams.seed), state.step)
    if axis_name:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    targets, adv_norm = prior_targets(networks, hparams, state.target_params,
                                      batch, state.adv_norm, axis_name,
                                      support, rng)
    targets = jax.lax.stop_gradient(targets)
    grads, metrics = grad_fn(state.params, batch, targets)
    # Each device's loss is already over the global count.
    grads = _psum(grads, axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target_params = optax.incremental_update(
        params, state.target_params, hparams.target_update_rate)
    metrics = {k: _psum(v, axis_name) for k, v in metrics.items()}
    if axis_name:  # valid_fraction is a ratio, not a sum over devices.
      metrics["valid_fraction"] = metrics["valid_fraction"] / jax.lax.psum(
          1, axis_name)
    metrics.update(grad_norm=optax.global_norm(grads),
                   update_norm=optax.global_norm(updates),
                   adv_scale=targets.sigma)
    return TrainState(params=params, target_params=target_params,
                      opt_state=opt_state, adv_norm=adv_norm,
                      step=state.step + 1), metrics

  return update
