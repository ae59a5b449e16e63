"""MuZero-style networks for Muesli, as pure haiku-transformed functions.

`represent(obs) -> hidden`, `predict(hidden) -> (policy_logits, value_logits)`,
`dynamics(hidden, action) -> (next_hidden, reward_logits)` and
`unroll(hidden, actions)` over K steps (Muesli Sec. 4 / MuZero App. B).
Hidden states are min-max scaled to [-1, 1] per example; the gradient that
enters the dynamics from each unroll step is scaled by 1/2.
"""

from typing import Callable, NamedTuple, Sequence, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp

Array = chex.Array


def scale_hidden(hidden: Array) -> Array:
  """Min-max scales each example's features `[..., H]` to [-1, 1]."""
  lo = jnp.min(hidden, axis=-1, keepdims=True)
  hi = jnp.max(hidden, axis=-1, keepdims=True)
  return 2.0 * (hidden - lo) / jnp.maximum(hi - lo, 1e-6) - 1.0


def scale_gradient(x: Array, scale: float) -> Array:
  """Identity forward; multiplies the gradient by `scale` backward."""
  return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


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


class Head(hk.Module):
  """One hidden layer; the output layer starts at zero (uniform outputs)."""

  def __init__(self, width: int, out_size: int, name=None):
    super().__init__(name=name)
    self._width, self._out_size = width, out_size

  def __call__(self, x: Array) -> Array:
    x = jax.nn.relu(hk.Linear(self._width)(x))
    return hk.Linear(self._out_size, w_init=jnp.zeros)(x)


class NetworkOutput(NamedTuple):
  policy_logits: Array  # [..., A]
  value_logits: Array  # [..., N]


class MuesliNetworks(NamedTuple):
  """Pure functions over params; every `apply` takes `(params, ...)`."""
  init: Callable[..., hk.Params]
  represent: Callable[[hk.Params, Array], Array]
  predict: Callable[[hk.Params, Array], NetworkOutput]
  dynamics: Callable[[hk.Params, Array, Array], Tuple[Array, Array]]
  unroll: Callable[[hk.Params, Array, Array], Tuple[NetworkOutput, Array]]
  num_actions: int
  num_bins: int


def make_networks(
    observation_shape: Tuple[int, ...],
    num_actions: int,
    num_bins: int,
    hidden_size: int = 256,
    num_blocks: int = 2,
    head_size: int = 128,
    torso: str = "mlp",
    dynamics_core: str = "mlp",
    observation_scale: float = 1.0,
    conv_channels: Sequence[int] = (16, 32, 32),
    conv_blocks: int = 2,
) -> MuesliNetworks:
  """Builds the representation, dynamics and prediction networks.

  Args:
    observation_shape: shape of one (stacked) observation, no batch dim.
    num_actions: `A`.
    num_bins: `N`, bins of the categorical value and reward heads.
    hidden_size: width of the hidden state.
    num_blocks: residual blocks in the torso and in the dynamics.
    head_size: width of the policy/value/reward heads' hidden layer.
    torso: "mlp" (vector observations) or "conv" (pixels).
    dynamics_core: "mlp" or "lstm" (the LSTM's cell state is the second half
      of the hidden state, so every function keeps one array).
    observation_scale: observations (e.g. uint8 frames) are cast to float32
      and divided by this inside the jitted functions, so the replay and the
      host-to-device copies keep the compact dtype.
    conv_channels: channels of the conv torso's sections.
    conv_blocks: residual blocks in each section of the conv torso.
  """
  if torso not in ("mlp", "conv"):
    raise ValueError(f"unknown torso {torso!r}: expected 'mlp' or 'conv'")
  if dynamics_core not in ("mlp", "lstm"):
    raise ValueError(f"unknown dynamics {dynamics_core!r}: 'mlp' or 'lstm'")

  def head(out_size, name):
    return Head(head_size, out_size, name=name)

  def represent(obs):
    obs = obs.astype(jnp.float32)
    if observation_scale != 1.0:
      obs = obs / observation_scale
    if torso == "mlp":
      hidden = MLPTorso(hidden_size, num_blocks, name="representation")(
          obs.reshape(obs.shape[0], -1))
    else:
      hidden = ConvTorso(hidden_size, tuple(conv_channels), conv_blocks,
                         name="representation")(obs)
    if dynamics_core == "lstm":
      hidden = jnp.concatenate([hidden, jnp.zeros_like(hidden)], axis=-1)
    return scale_hidden(hidden)

  def predict(hidden):
    return NetworkOutput(head(num_actions, "policy_head")(hidden),
                         head(num_bins, "value_head")(hidden))

  def dynamics(hidden, action):
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
    """`hidden [B, H]`, `actions [B, K]` -> predictions `[B, K, ...]`."""
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
    return unroll(hidden, jnp.zeros((obs.shape[0], 1), jnp.int32))

  transformed = hk.without_apply_rng(hk.multi_transform(
      lambda: (init, (represent, predict, dynamics, unroll))))
  represent_fn, predict_fn, dynamics_fn, unroll_fn = transformed.apply

  def init_fn(rng):
    dummy = jnp.zeros((1,) + tuple(observation_shape), jnp.float32)
    return transformed.init(rng, dummy)

  return MuesliNetworks(init=init_fn, represent=represent_fn,
                        predict=predict_fn, dynamics=dynamics_fn,
                        unroll=unroll_fn, num_actions=num_actions,
                        num_bins=num_bins)
