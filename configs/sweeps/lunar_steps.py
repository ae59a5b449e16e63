"""Fewest env steps to solve LunarLander-v3 (configs/lunar.py), on 2 seeds.

`python scripts/sweep.py --sweep lunar_steps.py --trials 24 --jobs 2 --pin`

A trial trains seeds 0 and 1 (never the seeds 100-109 that verify the
result) until the mean of the last 100 training returns reaches 200, or
for at most 100k env steps. Its value is the mean of their env steps to
solve, an unsolved run counting as the whole budget: a config that solves
early on both seeds wins, not one lucky seed. Trial 0 is lunar.py itself.
The learning rate decays over 300k env steps, as in a `make train` run of
300k: a trial is the first 100k steps of that run, not a faster schedule.
"""


def get_sweep():
  return dict(
      base_config="lunar.py",
      overrides=dict(seed=0, total_env_steps=100_000, lr_decay_env_steps=300_000,
                     stop_when_solved=True,
                     eval_interval=0, checkpoint_interval=0),
      space=dict(
          learning_rate=("log_float", 3e-4, 3e-3),
          lr_decay=("categorical", [True, False]),
          # Replay ratio: batch_size x sequence_length positions learnt per
          # num_envs x steps_per_update env steps.
          steps_per_update=("int", 1, 3),
          batch_size=("categorical", [16, 32, 48]),
          sequence_length=("categorical", [8, 16]),
          unroll_steps=("int", 3, 5),
          target_update_rate=("log_float", 0.03, 0.3),
          retrace_lambda=("float", 0.8, 1.0),
          discount=("float", 0.99, 0.999),
          entropy_weight=("log_float", 3e-4, 1e-2),
          hidden_size=("categorical", [64, 128, 256]),
          warmup_steps=("categorical", [16, 32, 64]),
      ),
      objective="steps_to_solve",
      direction="minimize",
      pruner=None,
      seeds=2,
      start_from_base=True,
  )
