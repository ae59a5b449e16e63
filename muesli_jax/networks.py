"""MuZero-style networks for Muesli, as pure haiku-transformed functions.

`represent(obs) -> hidden`, `predict(hidden) -> (policy_logits, value_logits)`,
`dynamics(hidden, action) -> (next_hidden, reward_logits)` and
`unroll(hidden, actions)` over K steps (Muesli Sec. 4 / MuZero App. B).
Discrete actions (`A` of them) give a categorical policy; continuous ones
(`action_dim = D > 0`, each in [-1, 1]) a diagonal Gaussian whose
`policy_logits [..., 2D]` hold its mean and standard deviation (see
`gaussian_log_prob`). `networks.policy(policy_logits)` makes either a
distribution with the same methods (`sample`, `log_prob`, `entropy`,
`mode`): the code that acts or learns reads those, not the action kind.
Hidden states are min-max scaled to [-1, 1] per example; the gradient that
enters the dynamics from each unroll step is scaled by 1/2.
"""

import functools
import math
from typing import Callable, NamedTuple, Sequence, Tuple, Union

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax

from muesli_jax.hparams import NetworkHparams

Array = chex.Array


def scale_hidden(hidden: Array) -> Array:
  """Min-max scales each example's features `[..., H]` to [-1, 1]."""
  lo = jnp.min(hidden, axis=-1, keepdims=True)
  hi = jnp.max(hidden, axis=-1, keepdims=True)
  return 2.0 * (hidden - lo) / jnp.maximum(hi - lo, 1e-6) - 1.0


# Identity forward; multiplies the gradient by `scale` backward (a custom VJP,
# so the forward pass is `x` itself, not `x * s + stop_gradient(x) * (1 - s)`).
scale_gradient = optax.scale_gradient


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


class Categorical:
  """The policy over `A` discrete actions given by logits `[..., A]`.

  Its log-probabilities are `jax.nn.log_softmax`'s and its samples
  `jax.random.categorical`'s, the ops the losses use (`losses.policy_loss`).
  """

  # Muesli's look-ahead (Eq. 14) and CMPO can sum over all its actions.
  enumerable = True

  def __init__(self, logits: Array):
    self.logits = logits

  def sample(self, rng: Array, num: int = 0) -> Array:
    """`[...]` int actions, or `[..., num]` with `num`."""
    if not num:
      return jax.random.categorical(rng, self.logits)
    batch = self.logits.shape[:-1]
    return jnp.moveaxis(jax.random.categorical(rng, self.logits,
                                               shape=(num,) + batch), 0, -1)

  def log_prob(self, actions: Array) -> Array:
    """`[...]` int actions -> `[...]` log pi(actions)."""
    return jnp.take_along_axis(jax.nn.log_softmax(self.logits),
                               actions[..., None], axis=-1)[..., 0]

  def probs(self) -> Array:
    """`[..., A]` pi(a) of every action."""
    return jax.nn.softmax(self.logits)

  def entropy(self) -> Array:
    """`[...]`, as `losses.policy_loss` computes it."""
    log_pi = jax.nn.log_softmax(self.logits)
    return -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)

  def mode(self) -> Array:
    """`[...]` the most likely actions."""
    return jnp.argmax(self.logits, axis=-1)

  def lookahead_actions(self, rng: Array, num: int) -> Array:
    """The actions to look ahead with from each state: all `A` of them,
    `[..., A]` (`rng` and `num` unused)."""
    del rng, num
    return jnp.broadcast_to(jnp.arange(self.logits.shape[-1]),
                            self.logits.shape)


class Gaussian:
  """A diagonal Gaussian policy over `D`-dimensional actions, from the policy
  head's `[..., 2D]` (mean, std); with `squash` the policy of `tanh(u)`, `u`
  Gaussian (see `gaussian_log_prob`)."""

  # A continuous policy is looked ahead with samples (sampled CMPO, Sec. 4.2).
  enumerable = False

  def __init__(self, params: Array, squash: bool = False):
    self.params = params
    self.squash = squash

  def sample(self, rng: Array, num: int = 0) -> Array:
    """`[..., D]` actions, or `[..., num, D]` with `num`."""
    return gaussian_sample(rng, self.params, num, self.squash)

  def log_prob(self, actions: Array) -> Array:
    """`[..., D]` actions -> `[...]` log-densities (broadcasting `[..., 2D]`
    against them, e.g. `[B, 1, 2D]` against `[B, S, D]` samples)."""
    return gaussian_log_prob(self.params, actions, self.squash)

  def entropy(self) -> Array:
    """`[...]`; of the pre-tanh Gaussian with `squash` (`gaussian_entropy`)."""
    return gaussian_entropy(self.params)

  def mode(self) -> Array:
    """`[..., D]` the mean, or its tanh (kept inside (-1, 1)) with
    `squash`."""
    mean = gaussian_params(self.params)[0]
    return _squash(mean) if self.squash else mean

  def lookahead_actions(self, rng: Array, num: int) -> Array:
    """`num` actions from each state, `[..., num, D]`, drawn from this
    policy with `rng`."""
    if rng is None:
      raise ValueError("continuous actions need an rng to sample the actions "
                       "to look ahead with")
    return self.sample(rng, num)


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


def _pool_geometry(size: int, window: int, stride: int):
  """`(out, pad_before, pad_after)` of a "SAME" pooling along one axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + window - size, 0)
  return out, total // 2, total - total // 2


def _pool_views(x: Array, window: int, stride: int):
  """The `window**2` strided views `[N, H', W', C]` of a "SAME" max-pool,
  in the row-major order of the window."""
  (oh, bh, ah), (ow, bw, aw) = (_pool_geometry(x.shape[1], window, stride),
                                _pool_geometry(x.shape[2], window, stride))
  padded = jnp.pad(x, ((0, 0), (bh, ah), (bw, aw), (0, 0)),
                   constant_values=-jnp.inf)
  views = [padded[:, i:i + (oh - 1) * stride + 1:stride,
                  j:j + (ow - 1) * stride + 1:stride]
           for i in range(window) for j in range(window)]
  return views


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: Array, window: int = 3, stride: int = 2) -> Array:
  """`hk.max_pool(x, window, stride, "SAME")` over `[N, H, W, C]`, with the
  same values and gradients, faster on a CPU.

  XLA differentiates a pooling window with select-and-scatter, which its
  CPU backend runs slowly (on MinAtar's 10x10 frames it cost more than the
  conv's own gradient). Here the window is `window**2` strided views and
  their maximum; the gradient goes to the first maximum of each window in
  row-major order, as select-and-scatter sends it.
  """
  views = _pool_views(x, window, stride)
  out = views[0]
  for view in views[1:]:
    out = jnp.maximum(out, view)
  return out


def _max_pool_fwd(x, window, stride):
  views = _pool_views(x, window, stride)
  # The value and the window offset of each window's first maximum.
  out, first = views[0], jnp.zeros(views[0].shape, jnp.int32)
  for k, view in enumerate(views[1:], 1):
    bigger = view > out
    out = jnp.where(bigger, view, out)
    first = jnp.where(bigger, k, first)
  return out, (first, x.shape)


def _max_pool_bwd(window, stride, residuals, g):
  first, x_shape = residuals
  (_, bh, _), (_, bw, _) = (_pool_geometry(x_shape[1], window, stride),
                            _pool_geometry(x_shape[2], window, stride))
  n, oh, ow, c = g.shape
  # Window offset i of output row a reads padded row i + stride * a: row
  # a + i // stride of the phase-(i % stride) plane. Each phase plane is a
  # sum of dense shifts (a strided scatter as interior padding is several
  # times slower on a CPU), and the planes interleave into the padded rows.
  rows, cols = oh + (window - 1) // stride, ow + (window - 1) // stride
  zero = jnp.zeros((), g.dtype)
  planes = [[jnp.zeros((n, rows, cols, c), g.dtype) for _ in range(stride)]
            for _ in range(stride)]
  # An input in several windows sums their gradients in the order of the
  # windows (row-major), as select-and-scatter does: later offsets hold
  # earlier windows, so they are added first.
  for k in reversed(range(window * window)):
    i, j = divmod(k, window)
    routed = jnp.pad(jnp.where(first == k, g, zero), (
        (0, 0), (i // stride, rows - oh - i // stride),
        (j // stride, cols - ow - j // stride), (0, 0)))
    planes[i % stride][j % stride] = planes[i % stride][j % stride] + routed
  grad = jnp.stack([jnp.stack(row, axis=3) for row in planes], axis=2)
  grad = grad.reshape(n, rows * stride, cols * stride, c)
  return (grad[:, bh:bh + x_shape[1], bw:bw + x_shape[2]],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


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
      x = max_pool(x, 3, 2)
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


class CategoricalPolicy(NamedTuple):
  """The policy head of `A` discrete actions: logits, one-hot actions into
  the dynamics. Called on `policy_logits [..., A]`, gives a `Categorical`."""
  num_actions: int

  @property
  def output_size(self) -> int:
    return self.num_actions

  def from_head(self, head_out: Array) -> Array:
    return head_out

  def encode(self, action: Array) -> Array:
    """`[...]` int actions -> `[..., A]` dynamics inputs."""
    return jax.nn.one_hot(action, self.num_actions)

  def __call__(self, policy_logits: Array) -> Categorical:
    return Categorical(policy_logits)


class GaussianPolicy(NamedTuple):
  """The policy head of continuous actions in [-1, 1]^D: a diagonal
  Gaussian's `[..., 2D]` (mean, std) (`gaussian_policy`). Called on them,
  gives a `Gaussian`."""
  action_dim: int
  init_std: float
  min_std: float
  squash: bool = False

  @property
  def output_size(self) -> int:
    return 2 * self.action_dim

  def from_head(self, head_out: Array) -> Array:
    return gaussian_policy(head_out, self.init_std, self.min_std, self.squash)

  def encode(self, action: Array) -> Array:
    """`[..., D]` actions, clipped to [-1, 1] as the env clips them."""
    return jnp.clip(action.astype(jnp.float32), -1.0, 1.0)

  def __call__(self, policy_logits: Array) -> Gaussian:
    return Gaussian(policy_logits, self.squash)


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
  # `policy(policy_logits)`: the policy as a distribution (`Categorical` or
  # `Gaussian`) with `sample`, `log_prob`, `entropy` and `mode`.
  policy: Union[CategoricalPolicy, GaussianPolicy]
  num_actions: int  # A; 0 for continuous actions
  num_bins: int
  action_dim: int = 0  # D for continuous actions; 0 for discrete ones

  @property
  def policy_size(self) -> int:
    """Width of `policy_logits`: `A`, or `2D` for a Gaussian."""
    return self.policy.output_size


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
  # The one place that tells discrete and continuous actions apart.
  if action_dim:
    num_actions = 0
    policy_kind = GaussianPolicy(action_dim, hparams.policy_init_std,
                                 hparams.policy_min_std, hparams.policy_squash)
  else:
    policy_kind = CategoricalPolicy(num_actions)
  hidden_size, num_blocks = hparams.hidden_size, hparams.num_blocks
  head_size, num_bins = hparams.head_size, hparams.num_bins
  torso, dynamics_core = hparams.torso, hparams.dynamics_core
  conv_channels, conv_blocks = hparams.conv_channels, hparams.conv_blocks
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
    policy = policy_kind.from_head(
        head(policy_kind.output_size, "policy_head")(hidden))
    return NetworkOutput(policy,
                         head(num_bins, "value_head")(hidden))

  def dynamics(hidden, action):
    action = policy_kind.encode(action)
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
    # Any action of the right shape and dtype: at init the policy is uniform.
    actions = policy_kind(predict(hidden).policy_logits).mode()[:, None]
    return unroll(hidden, actions)

  transformed = hk.without_apply_rng(hk.multi_transform(
      lambda: (init, (represent, predict, dynamics, unroll))))
  represent_fn, predict_fn, dynamics_fn, unroll_fn = transformed.apply

  def init_fn(rng):
    dummy = jnp.zeros((1,) + tuple(observation_shape), jnp.float32)
    return transformed.init(rng, dummy)

  return MuesliNetworks(init=init_fn, represent=represent_fn,
                        predict=predict_fn, dynamics=dynamics_fn,
                        unroll=unroll_fn, policy=policy_kind,
                        num_actions=num_actions, num_bins=num_bins,
                        action_dim=action_dim)
