"""Evaluation and videos: the Evaluator, frame strips, video files and
scripts/evaluate.py end to end, with tiny random-init networks."""

import contextlib
import io
import json
import os
import sys
import types

import gymnasium as gym
import imageio.v2 as iio
import imageio.v3 as iio3
import jax
import numpy as np
import pytest
from PIL import Image, ImageSequence

from conftest import TINY_NETWORK, load_script, tiny_config
from muesli_jax import checkpoint, envs as envs_lib, evaluation, learner
from muesli_jax import video
from muesli_jax.builder import build_networks
from muesli_jax.hparams import LearnerHparams

TINY = dict(TINY_NETWORK, num_bins=11)
evaluate_script = load_script("evaluate")
TINY_CONV = dict(TINY, conv_channels=(4,), conv_blocks=0)


def config_for(name, **overrides):
  return tiny_config(name, validate=False, **overrides)


def networks_and_params(config):
  probe = envs_lib.make_vector_env(config, num_envs=1)
  spec = envs_lib.env_spec(probe, config.env_id)
  probe.close()
  networks = build_networks(config, spec)
  return networks, networks.init(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def cartpole():
  config = config_for("cartpole.py", **TINY)
  return (config,) + networks_and_params(config)


def test_returns_are_counted_and_reproducible(cartpole):
  config, networks, params = cartpole
  with evaluation.Evaluator(config, networks, episodes=5, greedy=False,
                            num_envs=2) as evaluator:
    first = evaluator(params, seed=3)
    again = evaluator(params, seed=3)
    other = evaluator(params, seed=4)
    assert evaluator.traces == 1  # one compilation for every call
  assert first.returns.shape == (5,) and first.returns.dtype == np.float64
  assert first.lengths.shape == (5,) and first.frames is None
  # CartPole pays 1 a step: the returns are the lengths.
  np.testing.assert_array_equal(first.returns, first.lengths)
  np.testing.assert_array_equal(first.returns, again.returns)
  assert not np.array_equal(first.returns, other.returns)


def test_greedy(cartpole):
  config, networks, params = cartpole
  evaluator = evaluation.Evaluator(config, networks, episodes=3, greedy=True,
                                   num_envs=8)
  assert evaluator.num_envs == 3  # never more envs than episodes
  result = evaluator(params, seed=0)
  assert result.returns.shape == (3,) and np.all(result.lengths > 0)
  np.testing.assert_array_equal(result.returns,
                                evaluator(params, seed=0).returns)
  evaluator.close()


def test_record_cartpole(cartpole):
  config, networks, params = cartpole
  with evaluation.Evaluator(config, networks, episodes=2, greedy=False,
                            num_envs=1) as evaluator:
    result = evaluator(params, seed=0, record=True)
    # One env: its first episode is the first to end.
    assert len(result.frames) == result.lengths[0] + 1
    assert all(f.shape == (400, 600, 3) and f.dtype == np.uint8
               for f in result.frames)
    assert len({f.tobytes() for f in result.frames}) > 1  # it moves
    unrecorded = evaluator(params, seed=0)
    np.testing.assert_array_equal(result.returns, unrecorded.returns)
  with evaluation.Evaluator(config, networks, episodes=1, greedy=False,
                            num_envs=1, max_frames=4) as capped:
    assert len(capped(params, seed=0, record=True).frames) == 4


def test_record_stacked_minatar():
  config = config_for("minatar.py", stack=2, **TINY_CONV)
  networks, params = networks_and_params(config)
  with evaluation.Evaluator(config, networks, episodes=2, greedy=False,
                            num_envs=1) as evaluator:
    result = evaluator(params, seed=0, record=True)
  assert result.returns.shape == (2,)
  assert len(result.frames) == result.lengths[0] + 1
  # MinAtar renders floats in [0, 1]; they come back as RGB bytes.
  assert result.frames[0].shape == (10, 10, 3)
  assert result.frames[0].dtype == np.uint8 and result.frames[0].max() > 0


def test_record_without_a_renderer(monkeypatch):
  # An env without an rgb_array mode is pictured from its observations.
  monkeypatch.setattr(envs_lib, "renders_rgb", lambda env_id: False)
  config = config_for("minatar.py", **TINY_CONV)
  networks, params = networks_and_params(config)
  with evaluation.Evaluator(config, networks, episodes=1, greedy=False,
                            num_envs=1) as evaluator:
    result = evaluator(params, seed=0, record=True)
  assert len(result.frames) == result.lengths[0] + 1
  assert result.frames[0].shape == (10, 10, 3) and result.frames[0].max() > 0


def test_record_minigrid():
  config = config_for("minigrid.py", max_episode_steps=12, **TINY_CONV)
  networks, params = networks_and_params(config)
  with evaluation.Evaluator(config, networks, episodes=2, greedy=True,
                            num_envs=2) as evaluator:
    result = evaluator(params, seed=0, record=True)
    assert evaluator.fps == 10  # MiniGrid's render_fps
  assert len(result.frames) <= 13 and result.frames[0].shape == (160, 160, 3)


def test_pictures_from_observations():
  channels = np.zeros([10, 10, 4], np.uint8)
  channels[2, 3, 0] = channels[2, 3, 2] = channels[5, 5, 1] = 1
  picture = evaluation.observation_image(channels, scale=1.0)
  assert picture.shape == (10, 10, 3) and picture.dtype == np.uint8
  assert picture[0, 0].max() == 0  # nothing there: black
  assert not np.array_equal(picture[2, 3], picture[5, 5])
  grey = evaluation.observation_image(np.full([6, 8, 1], 255, np.uint8), 255.)
  assert grey.shape == (6, 8, 3) and grey.min() == 255
  with pytest.raises(ValueError, match="not images"):
    evaluation.observation_image(np.zeros(8), 1.0)
  assert evaluation.rgb_frame(np.ones([4, 5, 3]) * 0.5).max() == 128


def frames_of(count, height=11, width=13):
  return [np.full([height, width, 3], 8 * i, np.uint8) for i in range(count)]


def test_frame_strip():
  strip = video.frame_strip(frames_of(30, 400, 600), num=8, height=96)
  assert strip.shape == (96, 8 * 144, 3) and strip.dtype == np.uint8
  # The first and last frames are in it.
  assert strip[50, 70, 0] == 0 and strip[50, -70, 0] == 8 * 29
  short = video.frame_strip(frames_of(3), num=8, height=96)
  assert short.shape == (96, 8 * round(13 * 96 / 11), 3)


@pytest.mark.filterwarnings("ignore:os.fork")  # reading spawns ffmpeg
@pytest.mark.parametrize("name", ["episode.mp4", "episode.gif"])
def test_write_video_with_odd_frames(tmp_path, name):
  path = str(tmp_path / "videos" / name)
  video.write_video(path, frames_of(12), fps=25)
  assert os.path.getsize(path) > 0
  if name.endswith(".mp4"):
    reader = iio.get_reader(path, format="FFMPEG")
    assert reader.count_frames() == 12
    height, width = reader.get_data(0).shape[:2]
    reader.close()
    assert height % 2 == 0 and width % 2 == 0 and height >= 160
  else:
    assert len(list(iio3.imiter(path))) == 12


def test_write_video_rejects_other_formats(tmp_path):
  with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
    video.write_video(str(tmp_path / "episode.avi"), frames_of(2))
  with pytest.raises(ValueError):
    video.write_video(str(tmp_path / "episode.gif"), [])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cartpole):
  config, networks, _ = cartpole
  run = tmp_path_factory.mktemp("run")
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(1))
  checkpoints = checkpoint.Checkpoints(str(run))
  checkpoints.save(0, state, loop={}, arrays={})
  checkpoints.close()
  with open(run / "config.json", "w") as f:
    f.write(config.to_json())
  return run


def evaluate(*args):
  """scripts/evaluate.py with `args`, run in this process (its start-up
  would be most of a subprocess's time): returncode, stdout and stderr."""
  argv, stdout, stderr = sys.argv, io.StringIO(), io.StringIO()
  sys.argv = [evaluate_script.__file__, *map(str, args)]
  try:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      code = evaluate_script.main()
  finally:
    sys.argv = argv
  return types.SimpleNamespace(returncode=code, stdout=stdout.getvalue(),
                               stderr=stderr.getvalue())


def test_evaluate_script_writes_a_video(run_dir, tmp_path):
  out = tmp_path / "out.gif"
  result = evaluate(run_dir, "--episodes", 3, "--video", out)
  assert result.returncode == 0, result.stderr
  assert "3 episodes (sampled actions)" in result.stdout
  recorded = int(result.stdout.split(f"video: {out} (")[1].split()[0])
  # Pillow stores a frame identical to the previous one as a longer delay of
  # that one: the GIF lasts as long as the recorded frames at CartPole's 50
  # frames/s (20 ms each).
  with Image.open(out) as gif:
    delays = [gif.info["duration"] for _ in ImageSequence.Iterator(gif)]
  assert 1 < len(delays) <= recorded and sum(delays) == 20 * recorded


def test_evaluate_script_writes_the_episodes(run_dir, tmp_path):
  out = tmp_path / "evaluation.json"
  result = evaluate(run_dir, "--episodes", 4, "--greedy", "--out", out)
  assert result.returncode == 0, result.stderr
  record = json.loads(out.read_text())
  assert record["episodes"] == len(record["returns"]) == len(record["lengths"]) == 4
  assert record["greedy"] and record["checkpoint_env_steps"] == 0
  assert f"mean {record['mean']:.1f}," in result.stdout
  assert record["mean"] == pytest.approx(np.mean(record["returns"]))
  # CartPole pays 1 per step: each return is its episode's length.
  assert record["returns"] == [float(n) for n in record["lengths"]]


@pytest.mark.parametrize("problem", ["no_config", "avi", "out_folder"])
def test_evaluate_script_errors(run_dir, tmp_path, problem):
  if problem == "no_config":
    result = evaluate(tmp_path, "--episodes", 1)
  elif problem == "out_folder":
    result = evaluate(run_dir, "--out", tmp_path / "missing" / "e.json")
  else:
    result = evaluate(run_dir, "--video", tmp_path / "x.avi")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert not os.listdir(tmp_path)


class RenderFails(gym.Env):
  """Declares an rgb_array renderer that fails, as MuJoCo does without an
  OpenGL context."""
  metadata = {"render_modes": ["rgb_array"]}
  observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
  action_space = gym.spaces.Discrete(2)

  def __init__(self, render_mode=None):
    self.render_mode = render_mode
    self._t = 0

  def reset(self, *, seed=None, options=None):
    self._t = 0
    return np.zeros(3, np.float32), {}

  def step(self, action):
    self._t += 1
    return np.zeros(3, np.float32), 1.0, False, self._t >= 5, {}

  def render(self):
    raise RuntimeError("no OpenGL context")


gym.register("TestRenderFails-v0", entry_point=RenderFails)


def test_a_renderer_that_fails_turns_videos_off_not_the_run(capsys):
  config = config_for("cartpole.py", env_id="TestRenderFails-v0", **TINY)
  networks, params = networks_and_params(config)
  with evaluation.Evaluator(config, networks, episodes=2, greedy=False,
                            num_envs=2) as evaluator:
    for _ in range(2):
      result = evaluator(params, seed=0, record=True)
      assert result.frames is None
      np.testing.assert_array_equal(result.returns, [5.0, 5.0])
  err = capsys.readouterr().err
  assert err.count("warning: evaluation videos are off") == 1
  assert "no OpenGL context" in err
