"""`muesli_jax.losses` as a library: light to import, the snippet of
docs/losses.md runs as written, and the functions another agent builds CMPO
from."""

import os
import re
import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_python
from muesli_jax import losses

# What the training extra brings; the core must not import any of it.
TRAINING_ONLY = ("gymnasium", "Box2D", "tensorboardX", "orbax", "ml_collections",
                 "tqdm", "PIL")


def _losses_page_snippet() -> str:
  with open(os.path.join(ROOT, "docs", "losses.md")) as f:
    page = f.read()
  section = page.split("## Using the losses from another agent", 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run(code: str) -> subprocess.CompletedProcess:
  return run_python(code, timeout=300)


def test_losses_page_snippet_runs_as_written_without_the_training_extra():
  check = (f"\nimport sys\nloaded = [m for m in {TRAINING_ONLY!r} "
           "if m in sys.modules]\nprint('loaded:', loaded)\n")
  proc = _run(_losses_page_snippet() + check)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines[0] == "(32,) (32,)"
  assert lines[1] == "loaded: []"


def test_core_modules_import_no_training_dependency():
  proc = _run(
      "import sys\n"
      "import muesli_jax, muesli_jax.losses, muesli_jax.networks, "
      "muesli_jax.learner\n"
      f"print([m for m in {TRAINING_ONLY!r} if m in sys.modules])\n"
      "print(muesli_jax.__version__)")
  assert proc.returncode == 0, proc.stderr[-3000:]
  loaded, version = proc.stdout.splitlines()
  assert loaded == "[]"
  assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_no_warning_on_any_trace():
  logits = jnp.array([[0.1, 0.2, 0.3]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for _ in range(2):
      jax.jit(lambda l: losses.policy_loss(
          l, l, jnp.array([1]), jnp.array([0.5]), l)[0])(logits + 1.0)
      jax.jit(lambda l: losses.model_policy_loss(
          l[None], l[None], jnp.ones([1, 1])))(logits)


def test_categorical_kl_matches_its_definition():
  p = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.0, 0.0]])
  q = jnp.array([[1.0, 0.5, -0.5], [0.0, 0.0, 0.0]])
  probs_p, probs_q = jax.nn.softmax(p), jax.nn.softmax(q)
  expected = np.sum(probs_p * np.log(probs_p / probs_q), axis=-1)
  np.testing.assert_allclose(losses.categorical_kl(p, q), expected, rtol=1e-5)
  assert float(losses.categorical_kl(p, q)[1]) == 0.0
  # A target that rules an action out (-inf) stays finite, gradient too.
  target = jnp.array([0.0, -jnp.inf, 1.0])
  assert np.isfinite(float(losses.categorical_kl(target, q[0])))
  grad = jax.grad(lambda l: losses.categorical_kl(target, l))(q[0])
  assert np.all(np.isfinite(grad))


def test_prior_mixture_is_the_weighted_sum_of_probabilities():
  prior = jnp.array([[10.0, 0.0, -10.0]])
  behaviour = jnp.array([[0.0, 3.0, 0.0]])
  mixed = np.exp(losses.prior_mixture_log_probs(prior, behaviour, 0.9, 0.08,
                                                0.02))
  expected = (0.9 * jax.nn.softmax(prior) + 0.08 * jax.nn.softmax(behaviour)
              + 0.02 / 3)
  np.testing.assert_allclose(mixed, expected, rtol=1e-6)
  np.testing.assert_allclose(mixed.sum(), 1.0, rtol=1e-6)
  assert mixed.min() >= 0.02 / 3  # no action is ever ruled out
  with pytest.raises(ValueError, match="sum to 1"):
    losses.prior_mixture_log_probs(prior, behaviour, 0.9, 0.2, 0.0)


def test_all_action_advantages():
  q = jnp.array([[1.0, 3.0], [0.0, -2.0]])
  v = jnp.array([2.0, -1.0])
  np.testing.assert_allclose(losses.all_action_advantages(q, v, 2.0),
                             [[-0.5, 0.5], [0.5, -0.5]])
  np.testing.assert_allclose(
      losses.all_action_advantages(q, v, jnp.array([1.0, 0.5])),
      [[-1.0, 1.0], [2.0, -2.0]])
  grad = jax.grad(lambda q: losses.all_action_advantages(q, v, 1.0).sum())(q)
  np.testing.assert_array_equal(grad, 0.0)  # a target


def _pg_gradient(form, online, behaviour, ratio_clip=1.0):
  action, adv = jnp.array(0), jnp.array(2.0)
  cmpo = jnp.zeros(2)

  def loss(logits):
    total, extras = losses.policy_loss(logits, behaviour, action, adv, cmpo,
                                       kl_weight=0.0, ratio_clip=ratio_clip,
                                       form=form)
    return total
  return jax.grad(loss)(online), float(loss(online))


def test_policy_loss_forms():
  behaviour = jnp.zeros(2)  # b(a=0) = 0.5
  below = jnp.array([-0.5, 0.0])  # pi(a=0) < 0.5: ratio below the clip
  above = jnp.array([2.0, 0.0])  # pi(a=0) > 0.5: ratio above 1
  pi_below = jax.nn.softmax(below)[0]
  # Below the clip both forms have the gradient -rho * adv * grad log pi.
  g_is, loss_is = _pg_gradient("truncated_is", below, behaviour)
  g_sur, loss_sur = _pg_gradient("surrogate", below, behaviour)
  np.testing.assert_allclose(g_is, g_sur, rtol=1e-5)
  rho = pi_below / 0.5
  np.testing.assert_allclose(loss_sur, -rho * 2.0, rtol=1e-5)
  np.testing.assert_allclose(loss_is, -rho * 2.0 * np.log(pi_below), rtol=1e-5)
  # Above it the surrogate has none; the truncated form keeps c * adv.
  g_sur, loss_sur = _pg_gradient("surrogate", above, behaviour)
  np.testing.assert_array_equal(g_sur, 0.0)
  assert loss_sur == pytest.approx(-2.0)
  g_is, _ = _pg_gradient("truncated_is", above, behaviour)
  pi_above = jax.nn.softmax(above)
  np.testing.assert_allclose(g_is, -2.0 * (np.eye(2)[0] - pi_above), rtol=1e-5)
  with pytest.raises(ValueError, match="form"):
    _pg_gradient("ppo", below, behaviour)


def test_an_uneven_support_is_refused():
  logits = jnp.zeros([2, 4])
  targets = jnp.array([0.5, -1.0])
  uneven = jnp.array([-2.0, -1.0, 0.0, 3.0])
  with pytest.raises(ValueError, match="evenly spaced"):
    losses.categorical_loss(logits, targets, uneven)
  with pytest.raises(ValueError, match="evenly spaced"):
    losses.categorical_loss(logits, targets, uneven[::-1])
  assert losses.categorical_loss(logits, targets,
                                 losses.make_support(-3.0, 3.0, 4)).shape == (2,)
