"""A small sweep on CartPole-v1 (configs/cartpole.py); tests/test_sweep.py
runs it with a tiny budget.

`python scripts/sweep.py --sweep cartpole.py --trials 10`
"""


def get_sweep():
  return dict(
      base_config="cartpole.py",
      overrides=dict(total_env_steps=30_000),
      space=dict(
          learning_rate=("log_float", 1e-4, 3e-3),
          discount=("float", 0.97, 0.995),
          unroll_steps=("int", 3, 5),
          value_target=("categorical", ["retrace", "nstep"]),
      ),
      objective="train_return",
      direction="maximize",
      pruner=dict(n_startup_trials=3, n_warmup_steps=10_000),
      report_every=1_000,
  )
