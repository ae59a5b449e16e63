"""The Muesli learner: a `TrainState` pytree and a pure `update` function.

`make_update(networks, config)` returns `update(state, batch) -> (state,
metrics)`. Wrap it in `jax.jit` on one device, or in
`jax.pmap(update, axis_name=AXIS)` over several: sums and counts are
`psum`ed over `AXIS`, so every device sees the loss of the global batch and
the result equals the one-device update on the same batch.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax

from muesli_jax import losses
from muesli_jax.networks import MuesliNetworks

AXIS = "devices"


class Batch(NamedTuple):
  """`[B, W]` windows, `W = T + K + 1` (see ARCHITECTURE.md)."""
  observation: Any  # [B, W, ...]
  action: Any  # [B, W] int32
  reward: Any  # [B, W] reward of the transition out of each step
  discount: Any  # [B, W] 0 where that transition terminated the episode
  mask: Any  # [B, W] 0 where that transition is not real (reset step)
  behaviour_logits: Any  # [B, W, A]
  mc_return: Any  # [B, W] discounted return to episode end ("mc" target)
  mc_valid: Any  # [B, W] 1 where mc_return is known


class TrainState(NamedTuple):
  params: hk.Params
  target_params: hk.Params
  opt_state: optax.OptState
  adv_norm: losses.AdvNormState
  step: chex.Array


def total_updates(config) -> int:
  """Updates in a run: one per `steps_per_update` vector-env steps."""
  return max(1, config.total_env_steps //
             (config.num_envs * config.steps_per_update))


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam whose update is clipped to ±1 before the learning rate (App. F.1)."""
  if config.lr_decay:  # Linear decay to 0 over the run (Sec. 4.5).
    lr = optax.linear_schedule(config.learning_rate, 0.0,
                               total_updates(config))
  else:
    lr = config.learning_rate
  return optax.chain(optax.scale_by_adam(eps=config.adam_eps),
                     optax.clip(config.update_clip),
                     optax.add_decayed_weights(config.weight_decay),
                     optax.scale_by_learning_rate(lr))


def init_state(networks: MuesliNetworks, config, rng) -> TrainState:
  params = networks.init(rng)
  # A separate copy: the update donates both trees.
  return TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                    opt_state=make_optimizer(config).init(params),
                    adv_norm=losses.init_adv_norm(),
                    step=jnp.zeros([], jnp.int32))


def _sliding(x, length: int, count: int):
  """`[B, W, ...] -> [B, count, length, ...]`, windows starting at 0..count-1."""
  idx = jnp.arange(count)[:, None] + jnp.arange(length)[None, :]
  return x[:, idx]


def make_update(networks: MuesliNetworks, config,
                axis_name: Optional[str] = None):
  """Returns the pure update `(state, batch) -> (state, metrics)`.

  `config` needs `unroll_steps`, `sequence_length`, `discount`, the loss
  weights and prior mixing weights, `retrace_lambda`, `value_target`,
  `target_update_rate`, `adv_norm_decay`, `cmpo_clip`, `ratio_clip`,
  `value_min`, `value_max`.
  """
  K, T = config.unroll_steps, config.sequence_length
  A, N = networks.num_actions, networks.num_bins
  support = losses.make_support(config.value_min, config.value_max, N)
  optimizer = make_optimizer(config)
  value_target = config.value_target
  if value_target not in ("retrace", "nstep", "mc"):
    raise ValueError(f"value_target must be retrace, nstep or mc, "
                     f"got {value_target!r}")

  def psum(x):
    return jax.lax.psum(x, axis_name) if axis_name else x

  def to_scalar(logits):
    return losses.categorical_to_scalar(logits, support)

  def flat_apply(fn, params, x, *args):
    """Applies `fn` to `[B, W, ...]` inputs by folding B and W together."""
    lead = x.shape[:2]
    out = fn(params, x.reshape((-1,) + x.shape[2:]),
             *[a.reshape((-1,) + a.shape[2:]) for a in args])
    return jax.tree.map(lambda y: y.reshape(lead + y.shape[1:]), out)

  def prior_targets(target_params, batch, adv_norm):
    """Everything computed with the prior params: returns, CMPO policies."""
    W = batch.action.shape[1]
    hidden = flat_apply(networks.represent, target_params, batch.observation)
    prior = flat_apply(networks.predict, target_params, hidden)
    v_prior = to_scalar(prior.value_logits)  # [B, W]
    # One-step look-ahead of every action (Muesli Eq. 14): q = r + γ v(s').
    actions = jnp.broadcast_to(jnp.arange(A), hidden.shape[:2] + (A,))
    hidden_a = jnp.repeat(hidden[:, :, None], A, axis=2).reshape(
        hidden.shape[:1] + (W * A,) + hidden.shape[2:])
    next_hidden, reward_logits = flat_apply(
        networks.dynamics, target_params, hidden_a,
        actions.reshape(actions.shape[0], W * A))
    next_out = flat_apply(networks.predict, target_params, next_hidden)
    q_prior = (to_scalar(reward_logits) +
               config.discount * to_scalar(next_out.value_logits))
    q_prior = q_prior.reshape(hidden.shape[:2] + (A,))  # [B, W, A]

    discount_t = config.discount * batch.discount
    if value_target == "retrace":
      # Retrace assumes v = E_pi[q]; the model's q and the value head need
      # not agree, and a gap between them compounds along the trace. Shift q
      # per state so that its mean under the prior policy is v.
      pi_prior = jax.nn.softmax(prior.policy_logits)
      q_consistent = q_prior + (v_prior - jnp.sum(pi_prior * q_prior, -1))[..., None]
      q_taken = jnp.take_along_axis(q_consistent, batch.action[..., None],
                                    -1)[..., 0]
      returns = jax.vmap(lambda q, v, r, d, pi, mu, a, m: losses.retrace_targets(
          q, v, r, d, pi, mu, a, config.retrace_lambda, trace_mask_t=m))(
              q_taken[:, 1:], v_prior[:, 1:], batch.reward[:, :-1],
              discount_t[:, :-1], prior.policy_logits[:, 1:],
              batch.behaviour_logits[:, 1:], batch.action[:, 1:],
              batch.mask[:, 1:])
    elif value_target == "nstep":
      returns = jax.vmap(losses.nstep_targets)(
          v_prior[:, 1:], batch.reward[:, :-1], discount_t[:, :-1],
          batch.mask[:, 1:])
    else:
      returns = batch.mc_return[:, :-1]
    # returns: [B, W-1] targets for steps 0..T+K-1.

    # Advantage scale from E[(G - v_prior)^2] over the learning positions.
    adv_mask = batch.mask[:, :T]
    if value_target == "mc":
      adv_mask = adv_mask * batch.mc_valid[:, :T]
    pg_adv, adv_norm = losses.scale_advantages(
        adv_norm, returns[:, :T] - v_prior[:, :T], config.adv_norm_decay,
        mask=adv_mask, axis_name=axis_name)
    sigma = losses.advantage_scale(adv_norm)
    all_adv = (q_prior - v_prior[..., None]) / sigma  # [B, W, A]

    # Prior policy mixed with behaviour and uniform (App. F.2).
    mixed = (config.prior_mix_target * jax.nn.softmax(prior.policy_logits) +
             config.prior_mix_behaviour *
             jax.nn.softmax(batch.behaviour_logits) +
             config.prior_mix_uniform / A)
    cmpo_logits = losses.cmpo_policy_logits(jnp.log(mixed), all_adv,
                                            config.cmpo_clip)
    return dict(returns=returns, pg_adv=pg_adv, cmpo_logits=cmpo_logits,
                v_prior=v_prior, sigma=sigma, adv_mask=adv_mask,
                q_prior=q_prior), adv_norm

  def loss_fn(params, batch, targets):
    B = batch.action.shape[0]
    hidden = flat_apply(networks.represent, params,
                        batch.observation[:, :T])  # [B, T, H]
    out0 = flat_apply(networks.predict, params, hidden)
    unroll_actions = _sliding(batch.action, K, T)  # [B, T, K]
    outk, reward_logits = flat_apply(networks.unroll, params, hidden,
                                     unroll_actions)  # [B, T, K, ...]

    # valid[b, t, k] = 1 iff steps t..t+k are all real (same episode).
    mask_windows = _sliding(batch.mask, K + 1, T)  # [B, T, K+1]
    valid = jnp.cumprod(mask_windows, axis=-1)
    # After a termination the model is trained on an absorbing state (value
    # and reward 0), so look-aheads into episode ends see a true zero.
    terminated = valid * (1.0 - _sliding(batch.discount, K + 1, T))
    absorbing = jnp.minimum(jnp.cumsum(terminated, axis=-1), 1.0)
    absorbing = jnp.pad(absorbing[..., :-1], ((0, 0), (0, 0), (1, 0)))
    position = valid[..., 0]
    count = jnp.maximum(psum(jnp.sum(position)), 1.0)

    def mean(x):
      return jnp.sum(x * position) / count

    # L_pg+cmpo at k = 0.
    pg, extras = losses.policy_loss(
        out0.policy_logits, batch.behaviour_logits[:, :T],
        batch.action[:, :T], targets["pg_adv"], targets["cmpo_logits"][:, :T],
        config.kl_weight, config.ratio_clip)
    if value_target == "mc":  # No policy gradient where the return is unknown.
      pg = pg - extras["pg_loss"] * (1.0 - batch.mc_valid[:, :T])

    # L_m: model policy after k steps toward pi_cmpo at the real s_{t+k}.
    cmpo_k = _sliding(targets["cmpo_logits"][:, 1:], K, T)  # [B, T, K, A]
    model_policy = losses.model_policy_loss(outk.policy_logits, cmpo_k,
                                            valid[..., 1:])

    # L_v over k = 0..K and L_r over k = 1..K.
    returns_k = jnp.where(valid > 0, _sliding(targets["returns"], K + 1, T),
                          0.0)  # [B, T, K+1]
    value_mask = valid + absorbing
    if value_target == "mc":
      value_mask = value_mask * jnp.maximum(
          _sliding(batch.mc_valid, K + 1, T), absorbing)
    value_logits = jnp.concatenate(
        [out0.value_logits[:, :, None], outk.value_logits], axis=2)
    value = jnp.sum(losses.categorical_loss(value_logits, returns_k, support)
                    * value_mask, -1) / (K + 1)
    rewards_k = jnp.where(valid[..., :K] > 0, _sliding(batch.reward, K, T), 0.)
    reward = jnp.sum(losses.categorical_loss(reward_logits, rewards_k, support)
                     * (valid[..., :K] + absorbing[..., :K]), -1) / K

    # An optional entropy bonus (not in the paper) keeps exploration alive on
    # small control tasks where the policy otherwise collapses early.
    total = (config.pg_weight * pg + config.model_weight * model_policy +
             config.value_weight * value + config.reward_weight * reward -
             config.entropy_weight * extras["entropy"])
    metrics = dict(
        loss=mean(total), policy_loss=mean(pg), model_loss=mean(model_policy),
        value_loss=mean(value), reward_loss=mean(reward),
        kl_cmpo=mean(extras["kl"]), entropy=mean(extras["entropy"]),
        importance_weight=mean(extras["importance_weight"]),
        value_pred=mean(to_scalar(out0.value_logits)),
        value_target=mean(targets["returns"][:, :T]),
        valid_fraction=count / psum(jnp.asarray(B * T, jnp.float32)))
    return metrics["loss"], metrics

  def update(state: TrainState, batch: Batch) -> Tuple[TrainState, Dict]:
    targets, adv_norm = prior_targets(state.target_params, batch,
                                      state.adv_norm)
    targets = jax.lax.stop_gradient(targets)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch,
                                                     targets)
    grads = psum(grads)  # Each device's loss is already over the global count.
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target_params = optax.incremental_update(
        params, state.target_params, config.target_update_rate)
    metrics = {k: psum(v) for k, v in metrics.items()}
    if axis_name:  # valid_fraction is a ratio, not a sum over devices.
      metrics["valid_fraction"] = metrics["valid_fraction"] / jax.lax.psum(
          1, axis_name)
    metrics.update(grad_norm=optax.global_norm(grads),
                   update_norm=optax.global_norm(updates),
                   adv_scale=targets["sigma"])
    new_state = TrainState(params=params, target_params=target_params,
                           opt_state=opt_state, adv_norm=adv_norm,
                           step=state.step + 1)
    return new_state, metrics

  return update
