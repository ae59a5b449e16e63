"""Best trial of the Optuna study 'lunar_steps' (sqlite:///runs/sweeps/lunar_steps.db):
trial 17, steps_to_solve 73592 (minimize; the mean over 2 seeds).

Written by scripts/sweep.py; train it with
  python scripts/train.py --config runs/sweeps/lunar_steps/best_config.py
"""

from muesli_jax.config import load_config_file


def get_config():
  c = load_config_file('lunar.py')
  # Fixed for every trial (sweep overrides, --config.KEY=VALUE).
  c.seed = 0
  c.total_env_steps = 100000
  c.lr_decay_env_steps = 300000
  c.stop_when_solved = True
  c.eval_interval = 0
  c.checkpoint_interval = 0
  # Searched: trial 17's values.
  c.learning_rate = 0.0013205953202649892
  c.lr_decay = True
  c.steps_per_update = 1
  c.batch_size = 32
  c.sequence_length = 8
  c.unroll_steps = 3
  c.target_update_rate = 0.2991939357965036
  c.retrace_lambda = 0.9684167374887284
  c.discount = 0.9920046904201075
  c.entropy_weight = 0.0012342167418829479
  c.hidden_size = 256
  c.warmup_steps = 16
  return c
