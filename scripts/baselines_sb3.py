"""Stable-Baselines3 PPO / DQN baselines on MinAtar (CPU, single thread).

For comparison only: torch and stable-baselines3 are not dependencies of
this project. Use a separate virtual environment:

    python3 -m venv .venv-baselines
    .venv-baselines/bin/pip install stable-baselines3==2.9.2 torch minatar==1.0.15 gymnasium==1.4.0
    .venv-baselines/bin/python scripts/baselines_sb3.py \
        --algo ppo --env MinAtar/Breakout-v1 --steps 1000000 --seed 0 \
        --out runs/ppo_breakout_s0

Environment
    ``minatar==1.0.15`` via gymnasium (``minatar.gym.register_envs()``), ids
    ``MinAtar/<Game>-v1`` (minimal action set). MinAtar defaults are kept:
    sticky actions p=0.1, difficulty ramping on, no time limit. Observations
    (bool [10, 10, C]) are converted to uint8 and transposed to channels-first
    [C, 10, 10] by ``MinAtarObs``; the policy casts them to float32 (the Box is
    [0, 1], so SB3 does not treat it as an image and does not divide by 255).

Network (both algorithms)
    The MinAtar paper network (Young & Tian 2019; ``examples/dqn.py`` of
    kenjyoung/MinAtar): Conv2d(C, 16, 3x3, stride 1, no padding) -> ReLU ->
    flatten (16*8*8 = 1024) -> Linear(1024, 128) -> ReLU, implemented as the
    SB3 features extractor ``MinAtarCNN`` (features_dim=128). ``net_arch=[]``,
    so the heads are single linear layers on the 128 features:
    DQN: Linear(128, n_actions) Q-head (+ an identical target network);
    PPO: shared extractor, Linear(128, n_actions) policy head and Linear(128, 1)
    value head (SB3 orthogonal init).

Hyperparameters
    rl-baselines3-zoo (checked at commit 22e3ff24, hyperparams/ppo.yml and
    hyperparams/dqn.yml) has NO MinAtar entries, so:

    DQN = MinAtar paper settings (``examples/dqn.py`` constants): replay buffer
        100,000; batch 32; gamma 0.99; one gradient step per env step
        (train_freq=1, gradient_steps=1); target network copied every 1,000
        steps; replay start (uniform-random actions, no learning) 5,000 steps;
        epsilon 1.0 -> 0.1 linearly over the 100,000 steps after replay start,
        then 0.1; Huber (smooth L1) loss; centered RMSprop lr 2.5e-4,
        alpha (squared-gradient momentum) 0.95, eps (min squared gradient) 0.01;
        no double-DQN; no gradient clipping (SB3's default max_grad_norm=10 is
        replaced by 1e9, i.e. effectively off, as in the MinAtar code). One env.

    PPO = the zoo's standard ``atari`` PPO block (no MinAtar entry exists), with
        the Atari wrappers / frame stacking dropped: n_envs 8, n_steps 128,
        n_epochs 4, batch_size 256, learning_rate linear 2.5e-4 -> 0,
        clip_range linear 0.1 -> 0, ent_coef 0.01, vf_coef 0.5; SB3 defaults
        for the rest: gamma 0.99, gae_lambda 0.95, max_grad_norm 0.5,
        normalize_advantage True.

Outputs (in --out)
    episodes.csv  one row per finished episode:
                  env_steps,seconds,episode_return,length
                  (env_steps = total env steps over all envs at that moment)
    summary.json  algo, env, seed, steps, seconds, steps_per_second,
                  mean_return_last100, num_episodes, hyperparameters, versions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections import deque

import gymnasium as gym
import minatar
import minatar.gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv


class MinAtarObs(gym.ObservationWrapper):
    """bool [10, 10, C] -> uint8 [C, 10, 10] in a Box(0, 1)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)

    def observation(self, obs):
        return np.ascontiguousarray(np.transpose(obs, (2, 0, 1)), dtype=np.uint8)


class MinAtarCNN(BaseFeaturesExtractor):
    """Conv(16, 3x3, stride 1) -> ReLU -> flatten -> Linear(128) -> ReLU."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128):
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(c, 16, kernel_size=3, stride=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
        )
        n_flat = 16 * (h - 2) * (w - 2)
        self.fc = torch.nn.Sequential(torch.nn.Linear(n_flat, features_dim), torch.nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(observations.float()))


class EpisodeLogger(BaseCallback):
    """Writes every finished episode (from Monitor's info['episode']) to CSV and
    prints progress at most every `print_every` seconds."""

    def __init__(self, csv_path: str, total_steps: int, print_every: float = 30.0):
        super().__init__()
        self.csv_path = csv_path
        self.total_steps = total_steps
        self.print_every = print_every
        self.returns: list[float] = []
        self.last100: deque = deque(maxlen=100)

    def _on_training_start(self) -> None:
        self.t0 = time.time()
        self.last_print = self.t0
        self.fh = open(self.csv_path, "w", newline="")
        self.writer = csv.writer(self.fh)
        self.writer.writerow(["env_steps", "seconds", "episode_return", "length"])
        self.fh.flush()

    def mean100(self) -> float:
        return float(np.mean(self.last100)) if self.last100 else float("nan")

    def _on_step(self) -> bool:
        now = time.time()
        wrote = False
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                r = float(ep["r"])
                self.writer.writerow([self.num_timesteps, f"{now - self.t0:.2f}", r, int(ep["l"])])
                self.returns.append(r)
                self.last100.append(r)
                wrote = True
        if wrote:
            self.fh.flush()
        if now - self.last_print >= self.print_every:
            self.last_print = now
            el = now - self.t0
            sps = self.num_timesteps / max(el, 1e-9)
            eta = (self.total_steps - self.num_timesteps) / max(sps, 1e-9)
            print(
                f"steps {self.num_timesteps:>8d}/{self.total_steps}  episodes {len(self.returns):>6d}  "
                f"mean100 {self.mean100():8.3f}  sps {sps:7.1f}  elapsed {el / 60:6.1f} min  "
                f"eta {eta / 60:6.1f} min",
                flush=True,
            )
        return True

    def _on_training_end(self) -> None:
        self.fh.close()


def linear(start: float):
    """SB3 schedule: progress_remaining (1 -> 0) * start, i.e. the zoo's `lin_`."""

    def f(progress_remaining: float) -> float:
        return progress_remaining * start

    f.__name__ = f"linear_{start}"
    return f


def dqn_epsilon(total_steps: int, start_steps: int, anneal_steps: int, eps0: float, eps1: float):
    """MinAtar schedule: eps0 -> eps1 linearly over `anneal_steps` steps after
    `start_steps` (before that SB3 takes uniform random actions anyway)."""

    def f(progress_remaining: float) -> float:
        t = (1.0 - progress_remaining) * total_steps
        frac = min(max((t - start_steps) / anneal_steps, 0.0), 1.0)
        return eps0 + frac * (eps1 - eps0)

    return f


def make_env(env_id: str, n_envs: int, seed: int):
    minatar.gym.register_envs()
    return make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        wrapper_class=MinAtarObs,  # Monitor is applied first (inside), by make_vec_env
        vec_env_cls=DummyVecEnv,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=["ppo", "dqn"], required=True)
    p.add_argument("--env", default="MinAtar/Breakout-v1")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--print-every", type=float, default=30.0)
    args = p.parse_args()

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    policy_kwargs = dict(
        features_extractor_class=MinAtarCNN,
        features_extractor_kwargs=dict(features_dim=128),
        net_arch=[],
    )

    if args.algo == "ppo":
        hp = dict(
            n_envs=8,
            n_steps=128,
            n_epochs=4,
            batch_size=256,
            learning_rate="linear 2.5e-4 -> 0",
            clip_range="linear 0.1 -> 0",
            ent_coef=0.01,
            vf_coef=0.5,
            gamma=0.99,
            gae_lambda=0.95,
            max_grad_norm=0.5,
            normalize_advantage=True,
            source="rl-baselines3-zoo hyperparams/ppo.yml `atari` block (no MinAtar entry), "
            "without AtariWrapper/frame_stack; SB3 defaults otherwise",
        )
        env = make_env(args.env, hp["n_envs"], args.seed)
        model = PPO(
            "MlpPolicy",
            env,
            n_steps=hp["n_steps"],
            n_epochs=hp["n_epochs"],
            batch_size=hp["batch_size"],
            learning_rate=linear(2.5e-4),
            clip_range=linear(0.1),
            ent_coef=hp["ent_coef"],
            vf_coef=hp["vf_coef"],
            gamma=hp["gamma"],
            gae_lambda=hp["gae_lambda"],
            max_grad_norm=hp["max_grad_norm"],
            normalize_advantage=hp["normalize_advantage"],
            policy_kwargs=policy_kwargs,
            seed=args.seed,
            device="cpu",
            verbose=0,
        )
    else:
        hp = dict(
            n_envs=1,
            buffer_size=100_000,
            batch_size=32,
            gamma=0.99,
            train_freq=1,
            gradient_steps=1,
            target_update_interval=1000,
            learning_starts=5000,
            exploration="1.0 -> 0.1 linearly over the 100000 steps after learning_starts, then 0.1",
            loss="huber (smooth L1, SB3 DQN default)",
            optimizer="RMSprop(lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)",
            learning_rate=2.5e-4,
            max_grad_norm=1e9,
            source="MinAtar paper / kenjyoung/MinAtar examples/dqn.py (no MinAtar entry in rl-baselines3-zoo)",
        )
        env = make_env(args.env, 1, args.seed)
        model = DQN(
            "MlpPolicy",
            env,
            learning_rate=hp["learning_rate"],
            buffer_size=hp["buffer_size"],
            learning_starts=hp["learning_starts"],
            batch_size=hp["batch_size"],
            tau=1.0,
            gamma=hp["gamma"],
            train_freq=hp["train_freq"],
            gradient_steps=hp["gradient_steps"],
            target_update_interval=hp["target_update_interval"],
            exploration_initial_eps=1.0,
            exploration_final_eps=0.1,
            exploration_fraction=min(1.0, (5000 + 100_000) / args.steps),  # replaced below
            max_grad_norm=hp["max_grad_norm"],
            policy_kwargs=dict(
                policy_kwargs,
                optimizer_class=torch.optim.RMSprop,
                optimizer_kwargs=dict(alpha=0.95, eps=0.01, centered=True),
            ),
            seed=args.seed,
            device="cpu",
            verbose=0,
        )
        model.exploration_schedule = dqn_epsilon(args.steps, 5000, 100_000, 1.0, 0.1)

    print(model.policy, flush=True)
    n_params = sum(p.numel() for p in model.policy.parameters())
    print(f"algo={args.algo} env={args.env} steps={args.steps} seed={args.seed} params={n_params}", flush=True)

    cb = EpisodeLogger(os.path.join(args.out, "episodes.csv"), args.steps, args.print_every)
    t0 = time.time()
    model.learn(total_timesteps=args.steps, callback=cb)
    seconds = time.time() - t0

    summary = dict(
        algo=args.algo,
        env=args.env,
        seed=args.seed,
        steps=int(model.num_timesteps),
        requested_steps=args.steps,
        seconds=round(seconds, 2),
        steps_per_second=round(model.num_timesteps / seconds, 2),
        mean_return_last100=cb.mean100(),
        num_episodes=len(cb.returns),
        hyperparameters=hp,
        network="MinAtarCNN: Conv2d(C,16,3,stride 1)-ReLU-Flatten-Linear(1024,128)-ReLU, linear heads (net_arch=[])",
        policy_params=n_params,
        versions=dict(
            torch=torch.__version__,
            stable_baselines3=stable_baselines3.__version__,
            gymnasium=gym.__version__,
            minatar=getattr(minatar, "__version__", "1.0.15"),
            numpy=np.__version__,
            python=platform.python_version(),
        ),
        torch_num_threads=torch.get_num_threads(),
    )
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "steps_per_second",
                                              "mean_return_last100", "num_episodes")}), flush=True)
    env.close()


if __name__ == "__main__":
    main()
