"""Tests of `muesli_jax.replay.SequenceReplay`.

Observations encode where they came from: `obs[env] = (env id, absolute time)`,
so every sampled window can be traced back to its stream.
"""

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from muesli_jax.replay import SequenceReplay
from muesli_jax.types import stack_frames, stacked_shape

NUM_ACTIONS = 2


def make_replay(capacity, num_envs, window, **kwargs):
  return SequenceReplay(capacity=capacity, num_envs=num_envs,
                        observation_shape=(2,), observation_dtype=np.int64,
                        num_actions=NUM_ACTIONS, window=window, **kwargs)


def write_step(replay, t, reward=0.0, discount=1.0, mask=1.0):
  """Writes absolute time `t` for every env; scalars or `[E]` arrays."""
  e = replay.num_envs
  obs = np.stack([np.arange(e), np.full(e, t)], axis=-1)
  replay.add(obs, np.full(e, t % NUM_ACTIONS, np.int32),
             np.broadcast_to(np.float32(reward), (e,)).copy(),
             np.broadcast_to(np.float32(discount), (e,)).copy(),
             np.broadcast_to(np.float32(mask), (e,)).copy(),
             np.zeros((e, NUM_ACTIONS), np.float32))


def fill(replay, num_steps, start=0):
  for t in range(start, start + num_steps):
    write_step(replay, t)


def env_and_time(batch):
  """`[B, W]` env ids and times; `[B, W, S]` per frame for stacked samples."""
  obs = batch.observation.reshape(batch.observation.shape[:-1] + (-1, 2))
  if obs.shape[-2] == 1:
    obs = obs[..., 0, :]
  return obs[..., 0], obs[..., 1]


def assert_consecutive_single_stream(batch, window):
  envs, times = env_and_time(batch)
  assert batch.observation.shape[1] == window
  # one env per window
  np.testing.assert_array_equal(envs, np.repeat(envs[:, :1], window, axis=1))
  # consecutive times
  np.testing.assert_array_equal(np.diff(times, axis=1),
                                np.ones((times.shape[0], window - 1)))


def test_windows_stay_in_one_env_stream():
  replay = make_replay(capacity=50, num_envs=3, window=6)
  fill(replay, 30)
  batch = replay.sample(500, fresh_steps=5, replay_proportion=0.5)
  assert batch.observation.shape == (500, 6, 2)
  assert batch.action.shape == (500, 6)
  assert batch.behaviour_logits.shape == (500, 6, NUM_ACTIONS)
  assert_consecutive_single_stream(batch, 6)
  envs, times = env_and_time(batch)
  assert set(np.unique(envs)) == {0, 1, 2}  # every env gets sampled
  assert times.min() >= 0 and times.max() <= 29
  # the other fields come from the same rows: action was written as t % 2
  np.testing.assert_array_equal(batch.action, times % NUM_ACTIONS)


def test_windows_never_cross_write_head_after_wrap():
  capacity, window = 20, 5
  replay = make_replay(capacity=capacity, num_envs=2, window=window)
  fill(replay, 47)  # wraps twice; newest is t = 46, oldest kept t = 27
  assert replay.size == capacity and replay.total_steps == 47
  for proportion in (0.0, 0.5, 1.0):
    batch = replay.sample(400, fresh_steps=3, replay_proportion=proportion)
    assert_consecutive_single_stream(batch, window)
    _, times = env_and_time(batch)
    assert times.max() <= 46
    assert times.min() >= 47 - capacity
  # Uniform sampling reaches both the oldest and the newest window.
  batch = replay.sample(2000, fresh_steps=1, replay_proportion=1.0)
  _, times = env_and_time(batch)
  assert times[:, 0].min() == 27
  assert times[:, -1].max() == 46


def test_masks_and_discounts_at_episode_end():
  # Per env: transition out of t = 4 terminates (discount 0), t = 5 is the
  # autoreset step (mask 0, discount 0), t = 6 starts the next episode.
  replay = make_replay(capacity=30, num_envs=2, window=4)
  for t in range(12):
    terminated = t == 4
    reset = t == 5
    write_step(replay, t, reward=float(t),
               discount=0.0 if (terminated or reset) else 1.0,
               mask=0.0 if reset else 1.0)
  batch = replay.sample(500, fresh_steps=9, replay_proportion=0.5)
  assert_consecutive_single_stream(batch, 4)
  _, times = env_and_time(batch)
  np.testing.assert_array_equal(batch.mask == 0, times == 5)
  np.testing.assert_array_equal(batch.discount == 0,
                                (times == 4) | (times == 5))
  np.testing.assert_array_equal(batch.reward, times.astype(np.float32))
  assert (times == 5).any()  # the episode end was actually sampled


def test_memory_does_not_grow_past_capacity():
  capacity = 16
  replay = make_replay(capacity=capacity, num_envs=3, window=4,
                       mc_returns=True)
  shapes = {k: v.shape for k, v in replay.state_dict()[1].items()}
  before = replay.nbytes()
  for t in range(10 * capacity):
    write_step(replay, t, reward=1.0, discount=1.0,
               mask=0.0 if t % 7 == 6 else 1.0)
  assert replay.nbytes() == before
  assert {k: v.shape for k, v in replay.state_dict()[1].items()} == shapes
  assert replay.size == capacity
  assert replay.total_steps == 10 * capacity
  assert replay.observation.shape == (capacity, 3, 2)


def test_freshest_data_only_with_zero_replay_proportion():
  capacity, window, fresh = 100, 5, 4
  replay = make_replay(capacity=capacity, num_envs=20, window=window)
  total = 130
  fill(replay, total)
  # Newest window starts at total - window = 125; the `fresh` newest start
  # positions are 122..125, 4 x 20 envs = 80 distinct fresh windows.
  batch = replay.sample(60, fresh_steps=fresh, replay_proportion=0.0)
  _, times = env_and_time(batch)
  starts = times[:, 0]
  assert starts.min() >= total - window - fresh + 1
  assert starts.max() <= total - window
  assert len(np.unique(starts)) == fresh


def test_fresh_part_is_capped_by_the_distinct_fresh_windows():
  """Asking for more fresh windows than exist takes them all, once each."""
  replay = make_replay(capacity=100, num_envs=2, window=5)
  fill(replay, 130)
  batch = replay.sample(50, fresh_steps=4, replay_proportion=0.0)
  envs, times = env_and_time(batch)
  fresh = times[:, 0] >= 122
  assert fresh.sum() == 8  # 4 start times x 2 envs
  pairs = set(zip(envs[:, 0].tolist(), times[:, 0].tolist()))
  assert len(pairs) == 50

def test_full_replay_proportion_spreads_over_buffer():
  capacity, window = 100, 5
  replay = make_replay(capacity=capacity, num_envs=2, window=window)
  total = 130
  fill(replay, total)
  batch = replay.sample(2000, fresh_steps=4, replay_proportion=1.0)
  starts = env_and_time(batch)[1][:, 0]
  # 96 possible starts, 30..125; uniform sampling covers nearly all of them.
  assert starts.min() >= total - capacity
  assert starts.max() <= total - window
  assert len(np.unique(starts)) > 80
  assert (starts < 60).mean() > 0.2  # old data is used


def test_replay_proportion_mix():
  replay = make_replay(capacity=100, num_envs=32, window=5)
  fill(replay, 130)
  batch = replay.sample(100, fresh_steps=4, replay_proportion=0.25)
  starts = env_and_time(batch)[1][:, 0]
  # round(100 * 0.75) = 75 windows from the 4 freshest start positions
  # (128 distinct ones), plus those the uniform part happens to draw there.
  assert (starts >= 122).sum() >= 75
  assert (starts < 122).sum() >= 20


def test_sample_before_enough_data_raises():
  replay = make_replay(capacity=20, num_envs=2, window=5)
  fill(replay, 4)
  with pytest.raises(ValueError):
    replay.sample(4, fresh_steps=1, replay_proportion=0.5)
  write_step(replay, 4)  # now exactly one window
  batch = replay.sample(8, fresh_steps=1, replay_proportion=0.5)
  np.testing.assert_array_equal(env_and_time(batch)[1],
                                np.tile(np.arange(5), (8, 1)))


def test_monte_carlo_backfill_terminated_episode():
  replay = make_replay(capacity=20, num_envs=2, window=3, discount=0.5,
                       mc_returns=True)
  # t = 0..2: rewards 1, the transition out of t = 2 terminates.
  for t, d in zip(range(3), [1.0, 1.0, 0.0]):
    write_step(replay, t, reward=1.0, discount=d)
  np.testing.assert_array_equal(replay.mc_valid[:3], np.zeros((3, 2)))
  write_step(replay, 3, reward=0.0, discount=0.0, mask=0.0)  # reset step
  # G2 = 1; G1 = 1 + 0.5 * 1 = 1.5; G0 = 1 + 0.5 * 1.5 = 1.75
  np.testing.assert_allclose(replay.mc_return[:3],
                             [[1.75, 1.75], [1.5, 1.5], [1.0, 1.0]])
  np.testing.assert_array_equal(replay.mc_valid[:4],
                                [[1, 1], [1, 1], [1, 1], [0, 0]])
  batch = replay.sample(50, fresh_steps=2, replay_proportion=0.0)
  times = env_and_time(batch)[1]
  for b in range(50):
    for j, t in enumerate(times[b]):
      if t < 3:
        assert batch.mc_return[b, j] == [1.75, 1.5, 1.0][t]
        assert batch.mc_valid[b, j] == 1.0
      else:
        assert batch.mc_valid[b, j] == 0.0


def test_monte_carlo_backfill_truncated_episode_is_invalid():
  replay = make_replay(capacity=20, num_envs=1, window=3, discount=0.5,
                       mc_returns=True)
  # First episode terminates (t = 0..2), reset step t = 3.
  for t, d in zip(range(3), [1.0, 1.0, 0.0]):
    write_step(replay, t, reward=1.0, discount=d)
  write_step(replay, 3, reward=0.0, discount=0.0, mask=0.0)
  # Second episode t = 4, 5 is truncated: discount 1 at its last transition.
  write_step(replay, 4, reward=1.0, discount=1.0)
  write_step(replay, 5, reward=1.0, discount=1.0)
  write_step(replay, 6, reward=0.0, discount=0.0, mask=0.0)
  np.testing.assert_array_equal(replay.mc_valid[:7, 0],
                                [1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_allclose(replay.mc_return[:3, 0], [1.75, 1.5, 1.0])
  # Third episode, terminated after one step: G = 2.
  write_step(replay, 7, reward=2.0, discount=0.0)
  write_step(replay, 8, reward=0.0, discount=0.0, mask=0.0)
  np.testing.assert_array_equal(replay.mc_valid[7:9, 0], [1, 0])
  np.testing.assert_allclose(replay.mc_return[7, 0], 2.0)


def test_monte_carlo_backfill_per_env():
  # Env 0 ends an episode at t = 2, env 1 keeps going: only env 0 is filled.
  replay = make_replay(capacity=20, num_envs=2, window=3, discount=0.5,
                       mc_returns=True)
  for t in range(3):
    write_step(replay, t, reward=1.0, discount=np.array([0.0 if t == 2 else
                                                         1.0, 1.0]))
  write_step(replay, 3, reward=np.array([0.0, 1.0]),
             discount=np.array([0.0, 1.0]), mask=np.array([0.0, 1.0]))
  np.testing.assert_allclose(replay.mc_return[:3, 0], [1.75, 1.5, 1.0])
  np.testing.assert_array_equal(replay.mc_valid[:4, 0], [1, 1, 1, 0])
  np.testing.assert_array_equal(replay.mc_valid[:4, 1], [0, 0, 0, 0])


def test_monte_carlo_backfill_after_wrap():
  # An episode longer than the ring: the steps still held get the correct
  # return to the episode's end.  discount 0.5, rewards 1, terminated at
  # t = 11; capacity 8 holds t = 5..12 once the reset step t = 12 is written.
  replay = make_replay(capacity=8, num_envs=1, window=3, discount=0.5,
                       mc_returns=True)
  for t in range(12):
    write_step(replay, t, reward=1.0, discount=0.0 if t == 11 else 1.0)
  write_step(replay, 12, reward=0.0, discount=0.0, mask=0.0)
  # G11 = 1, G10 = 1.5, G9 = 1.75, G8 = 1.875, G7 = 1.9375, G6 = 1.96875,
  # G5 = 1.984375
  expected = {5: 1.984375, 6: 1.96875, 7: 1.9375, 8: 1.875, 9: 1.75,
              10: 1.5, 11: 1.0}
  for t, g in expected.items():
    assert replay.observation[t % 8, 0, 1] == t
    np.testing.assert_allclose(replay.mc_return[t % 8, 0], g)
    assert replay.mc_valid[t % 8, 0] == 1.0
  assert replay.mc_valid[12 % 8, 0] == 0.0


def test_capacity_smaller_than_window_raises():
  with pytest.raises(ValueError):
    make_replay(capacity=4, num_envs=2, window=8)
  with pytest.raises(ValueError):
    make_replay(capacity=7, num_envs=2, window=8)
  make_replay(capacity=9, num_envs=2, window=8)  # one window fits


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(
    num_envs=st.integers(1, 8), filled=st.integers(12, 120),
    batch_size=st.integers(1, 64), fresh_steps=st.integers(1, 6),
    proportion=st.sampled_from([0.0, 0.25, 0.75, 0.95, 1.0]),
    stack=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_batches_hold_no_duplicate_window(num_envs, filled, batch_size,
                                          fresh_steps, proportion, stack, seed):
  replay = make_replay(capacity=40, num_envs=num_envs, window=6, seed=seed,
                       stack=stack)
  fill(replay, filled)
  distinct = replay.num_windows() * num_envs
  hypothesis.assume(batch_size <= distinct)
  batch = replay.sample(batch_size, fresh_steps, proportion)
  envs, times = env_and_time(batch)
  if stack > 1:  # the newest frame of each stack is the step's own
    envs, times = envs[..., -1], times[..., -1]
  assert times.shape == (batch_size, 6)
  pairs = set(zip(envs[:, 0].tolist(), times[:, 0].tolist()))
  assert len(pairs) == batch_size


def test_batches_repeat_windows_only_when_too_few_are_stored():
  replay = make_replay(capacity=40, num_envs=2, window=6)
  fill(replay, 8)  # 3 start times x 2 envs = 6 windows
  batch = replay.sample(10, fresh_steps=1, replay_proportion=0.75)
  assert batch.observation.shape[0] == 10
  envs, times = env_and_time(batch)
  assert len(set(zip(envs[:, 0].tolist(), times[:, 0].tolist()))) <= 6


def test_stacked_frames_are_rebuilt_at_sample_time():
  """Frames are stored once; a sample stacks the previous `stack` frames of
  the same episode, repeating the episode's first frame before it."""
  stack, window = 3, 4
  replay = make_replay(capacity=30, num_envs=1, window=window, stack=stack)
  assert replay.observation.shape == (30, 1, 2)  # one frame per step
  # Episode A: t = 0..5, t = 6 is its autoreset step (mask 0);
  # episode B starts at t = 7.
  for t in range(20):
    write_step(replay, t, mask=0.0 if t == 6 else 1.0)
  batch = replay.sample(200, fresh_steps=1, replay_proportion=1.0)
  _, times = env_and_time(batch)  # [B, W, stack] of (time) per frame slot
  assert times.shape == (200, window, stack)
  for row in times.reshape(-1, stack):
    newest = row[-1]
    start = 0 if newest <= 6 else 7
    expected = [max(newest - k, start) for k in (2, 1, 0)]
    np.testing.assert_array_equal(row, expected)


def test_stacked_images_concatenate_channels_oldest_first():
  frames = np.arange(2 * 3 * 4 * 4 * 2).reshape(2, 3, 4, 4, 2)  # [B, S, H, W, C]
  stacked = stack_frames(frames, frame_ndim=3)
  assert stacked.shape == (2, 4, 4, 6)
  expected = np.concatenate([frames[:, s] for s in range(3)], axis=-1)
  np.testing.assert_array_equal(stacked, expected)
  assert stacked_shape((4, 4, 2), 3) == (4, 4, 6)
  assert stacked_shape((8,), 3) == (24,)
