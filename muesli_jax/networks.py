"""MuZero-style networks for Muesli, as pure haiku-transformed functions.

`represent(obs) -> hidden`, `predict(hidden) -> (policy_logits, value_logits)`,
`dynamics(hidden, action) -> (next_hidden, reward_logits)` and
`unroll(hidden, actions)` over K steps (Muesli Sec. 4 / MuZero App. B).
Discrete actions (`A` of them) give a categorical policy; continuous ones
(`action_dim = D > 0`, each in [-1, 1]) a diagonal Gaussian whose
`policy_logits [..., 2D]` hold its mean and standard deviation (see
`gaussian_log_prob`).
Hidden states are min-max scaled to [-1, 1] per example; the gradient that
enters the dynamics from each unroll step is scaled by 1/2.
"""

import math
from typing import Callable, NamedTuple, Sequence, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from muesli_jax.hparams import NetworkHparams

Array = chex.Array


def scale_hidden(hidden: Array) -> Array:
  """Min-max scales each example's features `[..., H]` to [-1, 1]."""
  lo = jnp.min(hidden, axis=-1, keepdims=True)
  hi = jnp.max(hidden, axis=-1, keepdims=True)
  return 2.0 * (hidden - lo) / jnp.maximum(hi - lo, 1e-6) - 1.0


def scale_gradient(x: Array, scale: float) -> Array:
  """Identity forward; multiplies the gradient by `scale` backward."""
  return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def gaussian_params(policy: Array) -> Tuple[Array, Array]:
  """`[..., 2D]` Gaussian policy output -> `(mean [..., D], std [..., D])`."""
  return jnp.split(policy, 2, axis=-1)


# A squashed Gaussian's actions stay this far inside (-1, 1), so that
# atanh of a stored action is finite in float32.
_SQUASH_EDGE = 1e-6
# Its pre-tanh mean is kept in [-MEAN_BOUND, MEAN_BOUND] (softly): tanh(5) is
# 0.9999, as close to a bound as an action needs to get.
SQUASH_MEAN_BOUND = 5.0


def gaussian_log_prob(policy: Array, actions: Array,
                      squash: bool = False) -> Array:
  """`log pi(actions)` of a diagonal Gaussian, summed over the `D` dimensions.

  Args:
    policy: `[..., 2D]` (mean, std) as the Gaussian policy head gives them.
    actions: `[..., D]`: unclipped samples (the env clips them), or with
      `squash` actions in (-1, 1).
    squash: the policy is `tanh(u)`, `u ~ N(mean, std)`: the density of
      `a = tanh(u)` is `N(u; mean, std) / prod(1 - a^2)`.

  Returns:
    `[...]` log-densities.
  """
  mean, std = gaussian_params(policy)
  if squash:
    edge = 1.0 - _SQUASH_EDGE
    u = jnp.arctanh(jnp.clip(actions, -edge, edge))
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large u.
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
  else:
    u, log_det = actions, 0.0
  z = (u - mean) / std
  return jnp.sum(-0.5 * jnp.square(z) - jnp.log(std) -
                 0.5 * jnp.log(2.0 * jnp.pi) - log_det, axis=-1)


def gaussian_entropy(policy: Array) -> Array:
  """`[..., 2D] -> [...]` entropy of the diagonal Gaussian (for a squashed
  policy, of its pre-tanh Gaussian: the squashed one has no closed form)."""
  _, std = gaussian_params(policy)
  return jnp.sum(jnp.log(std) + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e), axis=-1)


def gaussian_sample(rng: Array, policy: Array, num: int = 0,
                    squash: bool = False) -> Array:
  """Samples from `[..., 2D]` Gaussians: `[..., D]`, or `[..., num, D]`;
  with `squash`, their tanh (kept inside (-1, 1))."""
  mean, std = gaussian_params(policy)
  if num:
    mean, std = mean[..., None, :], std[..., None, :]
    shape = mean.shape[:-2] + (num,) + mean.shape[-1:]
  else:
    shape = mean.shape
  sample = mean + std * jax.random.normal(rng, shape, mean.dtype)
  return _squash(sample) if squash else sample


def _squash(u: Array) -> Array:
  edge = 1.0 - _SQUASH_EDGE
  return jnp.clip(jnp.tanh(u), -edge, edge)


def sample_actions(rng: Array, policy: Array, action_dim: int,
                   squash: bool = False) -> Array:
  """One action per policy: `[..., A] -> [...]` int, or `[..., 2D] -> [..., D]`."""
  if action_dim:
    return gaussian_sample(rng, policy, squash=squash)
  return jax.random.categorical(rng, policy)


def greedy_actions(policy: Array, action_dim: int,
                   squash: bool = False) -> Array:
  """The most likely action: the argmax, or the Gaussian's mean (its tanh
  with `squash`)."""
  if action_dim:
    mean = gaussian_params(policy)[0]
    return _squash(mean) if squash else mean
  return jnp.argmax(policy, axis=-1)


def gaussian_policy(head_out: Array, init_std: float, min_std: float,
                    squash: bool = False) -> Array:
  """A policy head's `[..., 2D]` outputs -> Gaussian `(mean, std)`: std
  `softplus(.) + min_std`; mean `tanh(.)` in [-1, 1], or with `squash` the
  pre-tanh mean, softly bounded to +-`SQUASH_MEAN_BOUND`.

  Outputs of 0 (a zero-initialised output layer) give mean 0 and std
  `init_std`; `min_std` keeps log-densities finite. A tanh-bounded mean
  whose samples the env clips can saturate: its gradient vanishes at the
  bounds. The squashed policy's pre-tanh mean keeps its gradient there.
  """
  mean, raw_std = jnp.split(head_out, 2, axis=-1)
  offset = math.log(math.expm1(init_std - min_std))  # softplus^-1
  std = jax.nn.softplus(raw_std + offset) + min_std
  if squash:
    mean = SQUASH_MEAN_BOUND * jnp.tanh(mean / SQUASH_MEAN_BOUND)
  else:
    mean = jnp.tanh(mean)
  return jnp.concatenate([mean, std], axis=-1)


class ResidualBlock(hk.Module):
  """Pre-activation residual MLP block with layer norm."""

  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    y = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
    y = hk.Linear(width)(jax.nn.relu(y))
    y = hk.Linear(width, w_init=hk.initializers.VarianceScaling(0.1))(
        jax.nn.relu(y))
    return x + y


class MLPTorso(hk.Module):
  """Linear embedding followed by residual blocks: `[B, D] -> [B, H]`."""

  def __init__(self, width: int, num_blocks: int, name=None):
    super().__init__(name=name)
    self._width = width
    self._num_blocks = num_blocks

  def __call__(self, x: Array) -> Array:
    x = hk.Linear(self._width)(x)
    for _ in range(self._num_blocks):
      x = ResidualBlock()(x)
    return jax.nn.relu(hk.LayerNorm(-1, True, True)(x))


class ConvTorso(hk.Module):
  """Small ResNet for pixels `[B, H, W, C] -> [B, width]` (IMPALA style).

  Each section is a 3x3 conv, a 3x3 max-pool of stride 2 and `blocks`
  residual blocks of two 3x3 convs.
  """

  def __init__(self, width: int, channels: Sequence[int] = (16, 32, 32),
               blocks: int = 2, name=None):
    super().__init__(name=name)
    self._width = width
    self._channels = channels
    self._blocks = blocks

  def __call__(self, x: Array) -> Array:
    for ch in self._channels:
      x = hk.Conv2D(ch, 3)(x)
      x = hk.max_pool(x, 3, 2, "SAME")
      for _ in range(self._blocks):
        y = hk.Conv2D(ch, 3)(jax.nn.relu(x))
        x = x + hk.Conv2D(ch, 3)(jax.nn.relu(y))
    x = jax.nn.relu(x).reshape(x.shape[0], -1)
    return jax.nn.relu(hk.Linear(self._width)(x))


class StridedConvTorso(hk.Module):
  """The DQN torso (Mnih et al. 2015): `[B, H, W, C] -> [B, width]`.

  Convs of 8x8 stride 4, 4x4 stride 2, then 3x3 stride 1 (as many as
  `channels` has entries), no pooling. On a 64x96x4 frame, 6.7 MFLOP
  against 58 for `ConvTorso` with one block per section: a torso that a
  CPU can train.
  """

  _KERNELS_STRIDES = ((8, 4), (4, 2), (3, 1))

  def __init__(self, width: int, channels: Sequence[int] = (16, 32, 32),
               name=None):
    super().__init__(name=name)
    self._width = width
    self._channels = channels

  def __call__(self, x: Array) -> Array:
    for i, ch in enumerate(self._channels):
      kernel, stride = self._KERNELS_STRIDES[min(i, 2)]
      x = jax.nn.relu(hk.Conv2D(ch, kernel, stride=stride)(x))
    x = x.reshape(x.shape[0], -1)
    return jax.nn.relu(hk.Linear(self._width)(x))


class Head(hk.Module):
  """One hidden layer; the output layer starts at zero (uniform outputs)."""

  def __init__(self, width: int, out_size: int, name=None):
    super().__init__(name=name)
    self._width, self._out_size = width, out_size

  def __call__(self, x: Array) -> Array:
    x = jax.nn.relu(hk.Linear(self._width)(x))
    return hk.Linear(self._out_size, w_init=jnp.zeros)(x)


class NetworkOutput(NamedTuple):
  policy_logits: Array  # [..., A] logits, or [..., 2D] Gaussian (mean, std)
  value_logits: Array  # [..., N]


class MuesliNetworks(NamedTuple):
  """Pure functions over params; every `apply` takes `(params, ...)`."""
  init: Callable[..., hk.Params]
  represent: Callable[[hk.Params, Array], Array]
  predict: Callable[[hk.Params, Array], NetworkOutput]
  dynamics: Callable[[hk.Params, Array, Array], Tuple[Array, Array]]
  unroll: Callable[[hk.Params, Array, Array], Tuple[NetworkOutput, Array]]
  num_actions: int  # A; 0 for continuous actions
  num_bins: int
  action_dim: int = 0  # D for continuous actions; 0 for discrete ones
  squash: bool = False  # continuous: a tanh-squashed Gaussian policy

  @property
  def policy_size(self) -> int:
    """Width of `policy_logits`: `A`, or `2D` for a Gaussian."""
    return 2 * self.action_dim if self.action_dim else self.num_actions


def make_networks(
    hparams: NetworkHparams,
    observation_shape: Tuple[int, ...],
    num_actions: int,
    action_dim: int = 0,
    observation_scale: float = 1.0,
) -> MuesliNetworks:
  """Builds the representation, dynamics and prediction networks.

  Args:
    hparams: their sizes and kinds: the torso ("mlp" for vector
      observations, "conv" a small ResNet or "dqn" DQN's three strided convs
      for pixels), the dynamics core ("mlp", or "lstm" whose cell state is
      the second half of the hidden state, so every function keeps one
      array), `N = num_bins` of the value and reward heads, and the Gaussian
      policy's std at init, its floor and its squashing.
    observation_shape: shape of one (stacked) observation, no batch dim.
    num_actions: `A`.
    action_dim: `D > 0` for continuous actions in [-1, 1]^D (then
      `num_actions` is ignored): a Gaussian policy head, and the dynamics
      take the action vector (clipped to [-1, 1] as the env clips it).
    observation_scale: the env's; `hparams.observation_scale`, where set,
      overrides it. Observations (e.g. uint8 frames) are cast to float32 and
      divided by it inside the jitted functions, so the replay and the
      host-to-device copies keep the compact dtype.
  """
  if action_dim < 0:
    raise ValueError(f"action_dim must be >= 0, got {action_dim}")
  if action_dim:
    num_actions = 0
  hidden_size, num_blocks = hparams.hidden_size, hparams.num_blocks
  head_size, num_bins = hparams.head_size, hparams.num_bins
  torso, dynamics_core = hparams.torso, hparams.dynamics_core
  conv_channels, conv_blocks = hparams.conv_channels, hparams.conv_blocks
  policy_init_std = hparams.policy_init_std
  policy_min_std = hparams.policy_min_std
  policy_squash = hparams.policy_squash
  observation_scale = hparams.observation_scale or observation_scale

  def head(out_size, name):
    return Head(head_size, out_size, name=name)

  def represent(obs):
    obs = obs.astype(jnp.float32)
    if observation_scale != 1.0:
      obs = obs / observation_scale
    if torso == "mlp":
      hidden = MLPTorso(hidden_size, num_blocks, name="representation")(
          obs.reshape(obs.shape[0], -1))
    elif torso == "conv":
      hidden = ConvTorso(hidden_size, tuple(conv_channels), conv_blocks,
                         name="representation")(obs)
    else:
      hidden = StridedConvTorso(hidden_size, tuple(conv_channels),
                                name="representation")(obs)
    if dynamics_core == "lstm":
      hidden = jnp.concatenate([hidden, jnp.zeros_like(hidden)], axis=-1)
    return scale_hidden(hidden)

  def predict(hidden):
    if action_dim:
      policy = gaussian_policy(head(2 * action_dim, "policy_head")(hidden),
                               policy_init_std, policy_min_std,
                               policy_squash)
    else:
      policy = head(num_actions, "policy_head")(hidden)
    return NetworkOutput(policy,
                         head(num_bins, "value_head")(hidden))

  def dynamics(hidden, action):
    if action_dim:
      action = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
    else:
      action = jax.nn.one_hot(action, num_actions)
    if dynamics_core == "mlp":
      next_hidden = MLPTorso(hidden_size, num_blocks, name="dynamics")(
          jnp.concatenate([hidden, action], axis=-1))
    else:
      h, c = jnp.split(hidden, 2, axis=-1)
      out, state = hk.LSTM(hidden_size, name="dynamics")(
          action, hk.LSTMState(hidden=h, cell=c))
      next_hidden = jnp.concatenate([out, state.cell], axis=-1)
    reward_logits = head(num_bins, "reward_head")(next_hidden)
    return scale_hidden(next_hidden), reward_logits

  def unroll(hidden, actions):
    """`hidden [B, H]`, `actions [B, K]` (or `[B, K, D]`) -> predictions
    `[B, K, ...]`."""
    def step(h, action):
      h, reward_logits = dynamics(scale_gradient(h, 0.5), action)
      return h, (predict(h), reward_logits)
    # hk.scan runs the same modules K times, so parameters are shared. K is
    # small: unrolled, XLA fuses across steps and keeps no stacked residuals
    # for the backward pass (13% faster update on CPU than a while loop).
    _, (outputs, reward_logits) = hk.scan(
        step, hidden, jnp.swapaxes(actions, 0, 1), unroll=True)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return jax.tree.map(swap, outputs), swap(reward_logits)

  def init(obs):
    hidden = represent(obs)
    predict(hidden)
    if action_dim:
      actions = jnp.zeros((obs.shape[0], 1, action_dim), jnp.float32)
    else:
      actions = jnp.zeros((obs.shape[0], 1), jnp.int32)
    return unroll(hidden, actions)

  transformed = hk.without_apply_rng(hk.multi_transform(
      lambda: (init, (represent, predict, dynamics, unroll))))
  represent_fn, predict_fn, dynamics_fn, unroll_fn = transformed.apply

  def init_fn(rng):
    dummy = jnp.zeros((1,) + tuple(observation_shape), jnp.float32)
    return transformed.init(rng, dummy)

  return MuesliNetworks(init=init_fn, represent=represent_fn,
                        predict=predict_fn, dynamics=dynamics_fn,
                        unroll=unroll_fn, num_actions=num_actions,
                        num_bins=num_bins, action_dim=action_dim,
                        squash=bool(action_dim and policy_squash))
