"""Sweep of the learner's main knobs on LunarLander-v3 (configs/lunar.py).

`python scripts/sweep.py --sweep lunar.py --trials 20 --jobs 2`
"""


def get_sweep():
  return dict(
      base_config="lunar.py",
      # Half the usual budget: most seeds solve by 150k env steps, so the
      # mean of the last 100 returns there still separates good settings.
      overrides=dict(total_env_steps=150_000),
      space=dict(
          learning_rate=("log_float", 1e-4, 2e-3),
          discount=("float", 0.99, 0.999),
          retrace_lambda=("float", 0.8, 1.0),
          entropy_weight=("log_float", 1e-4, 1e-2),
          model_weight=("float", 0.25, 2.0),
          target_update_rate=("log_float", 0.01, 0.3),
          unroll_steps=("int", 3, 6),
          value_target=("categorical", ["retrace", "nstep"]),
      ),
      objective="train_return",
      direction="maximize",
      # Trials are compared from 40k env steps on, every 10k.
      pruner=dict(n_startup_trials=5, n_warmup_steps=40_000),
      report_every=10_000,
  )
