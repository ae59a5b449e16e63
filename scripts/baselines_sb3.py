"""Stable-Baselines3 baselines: PPO / DQN on MinAtar, SAC / PPO on continuous control.

CPU, single thread.

For comparison only: torch and stable-baselines3 are not dependencies of
this project. Use a separate virtual environment:

    python3 -m venv .venv-baselines
    .venv-baselines/bin/pip install stable-baselines3==2.9.2 torch minatar==1.0.15 gymnasium==1.4.0
    # continuous control only (LunarLanderContinuous needs box2d, HalfCheetah mujoco;
    # mujoco 4.0.0 on the local index is a broken pure-python wheel, 3.14.0 works):
    .venv-baselines/bin/pip install "gymnasium[box2d]==1.4.0" "gymnasium[mujoco]==1.4.0" "mujoco==3.14.0"
    .venv-baselines/bin/python scripts/baselines_sb3.py \
        --algo ppo --env MinAtar/Breakout-v1 --steps 1000000 --seed 0 \
        --out runs/ppo_breakout_s0
    .venv-baselines/bin/python scripts/baselines_sb3.py \
        --algo sac --env LunarLanderContinuous-v3 --steps 500000 --seed 0 \
        --out runs/sac_llc_s0

Supported combinations: --algo {ppo,dqn} with --env MinAtar/<Game>-v1, and
--algo {sac,ppo} with --env {Pendulum-v1, LunarLanderContinuous-v3, HalfCheetah-v5}.

Environment (MinAtar)
    ``minatar==1.0.15`` via gymnasium (``minatar.gym.register_envs()``), ids
    ``MinAtar/<Game>-v1`` (minimal action set). MinAtar defaults are kept:
    sticky actions p=0.1, difficulty ramping on, no time limit. Observations
    (bool [10, 10, C]) are converted to uint8 and transposed to channels-first
    [C, 10, 10] by ``MinAtarObs``; the policy casts them to float32 (the Box is
    [0, 1], so SB3 does not treat it as an image and does not divide by 255).

Network (MinAtar, both algorithms)
    The MinAtar paper network (Young & Tian 2019; ``examples/dqn.py`` of
    kenjyoung/MinAtar): Conv2d(C, 16, 3x3, stride 1, no padding) -> ReLU ->
    flatten (16*8*8 = 1024) -> Linear(1024, 128) -> ReLU, implemented as the
    SB3 features extractor ``MinAtarCNN`` (features_dim=128). ``net_arch=[]``,
    so the heads are single linear layers on the 128 features:
    DQN: Linear(128, n_actions) Q-head (+ an identical target network);
    PPO: shared extractor, Linear(128, n_actions) policy head and Linear(128, 1)
    value head (SB3 orthogonal init).

Hyperparameters (MinAtar)
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

Continuous control (--algo sac|ppo, --env Pendulum-v1 | LunarLanderContinuous-v3
| HalfCheetah-v5)
    Environment: plain ``gym.make(env_id)`` (gymnasium 1.4.0 registered
    TimeLimits: Pendulum 200, LunarLanderContinuous 1000, HalfCheetah 1000
    steps), each env wrapped in SB3 ``Monitor`` by ``make_vec_env`` (seeded
    seed+i), ``DummyVecEnv``, as the zoo does. No MinAtar wrappers.

    Hyperparameters are the rl-baselines3-zoo entries, read at commit
    22e3ff2450fd92033f7f032915e1f64894a09584 (hyperparams/sac.yml and
    hyperparams/ppo.yml); they are copied into ``ZOO`` below and written
    verbatim to summary.json (``zoo_entry``) together with the effective values
    (``effective``, read back from the constructed model). Deviations from the
    zoo: ``n_timesteps`` is replaced by --steps (schedules therefore decay to 0
    over --steps); --learning-starts (SAC only, default: the zoo/SB3 value) may
    override learning_starts, e.g. for smoke tests, and is then recorded.
    ``lin_X`` means X * progress_remaining (linear from X to 0 over the run,
    the zoo's SimpleLinearSchedule). ``normalize: true`` means VecNormalize
    (obs and reward, SB3 defaults clip_obs=10, clip_reward=10, eps=1e-8) with
    gamma = the algorithm's gamma, as the zoo does. Everything not listed is an
    SB3 2.9.2 default. The zoo has no -v5 MuJoCo entries; HalfCheetah-v5 uses
    the zoo's HalfCheetah-v4 entry (same 17-d obs / 6-d action).

    SAC (one env; SB3 defaults: lr 3e-4, buffer 1e6, learning_starts 100,
        batch 256, tau 0.005, gamma 0.99, train_freq 1, gradient_steps 1,
        ent_coef auto (init 1.0), target_entropy -dim(A), target update every
        step, no gSDE, MlpPolicy net_arch [256, 256] ReLU, 2 critics, Adam with
        torch defaults):
      Pendulum-v1 (zoo n_timesteps 2e4): learning_rate 1e-3; rest SB3 defaults.
      LunarLanderContinuous-v3 (zoo 5e5): batch_size 256, learning_rate lin_7.3e-4,
        buffer_size 1e6, ent_coef auto, gamma 0.99, tau 0.01, train_freq 1,
        gradient_steps 1, learning_starts 10000, net_arch [400, 300].
      HalfCheetah-v5 (zoo HalfCheetah-v4, 1e6): learning_starts 10000; rest
        SB3 defaults.
    PPO (SB3 defaults: lr 3e-4, n_steps 2048, batch 64, n_epochs 10, gamma
        0.99, gae_lambda 0.95, clip 0.2, no value clipping, normalize_advantage,
        ent_coef 0, vf_coef 0.5, max_grad_norm 0.5, no target_kl, MlpPolicy
        separate pi/vf [64, 64] Tanh, ortho init, log_std_init 0, Adam eps 1e-5;
        PPO always finishes its last rollout, so it may run past --steps
        by up to n_envs * n_steps - 1 env steps; summary.json records both):
      Pendulum-v1 (zoo 1e5): n_envs 4, n_steps 1024, gae_lambda 0.95, gamma 0.9,
        n_epochs 10, ent_coef 0.0, learning_rate 1e-3, clip_range 0.2,
        use_sde True, sde_sample_freq 4.
      LunarLanderContinuous-v3 (zoo 1e6): n_envs 16, n_steps 1024, batch_size 64,
        gae_lambda 0.98, gamma 0.999, n_epochs 4, ent_coef 0.01.
      HalfCheetah-v5 (zoo HalfCheetah-v4, 1e6): normalize true (VecNormalize,
        gamma 0.98), n_envs 1, batch_size 64, n_steps 512, gamma 0.98,
        learning_rate 2.0633e-05, ent_coef 0.000401762, clip_range 0.1,
        n_epochs 20, gae_lambda 0.92, max_grad_norm 0.8, vf_coef 0.58096,
        policy log_std_init -2, ortho_init False, ReLU,
        net_arch pi [256, 256] / vf [256, 256].

    Returns in episodes.csv are the raw (unnormalised) episode returns: Monitor
    sits inside VecNormalize, and its info['episode'] is what is logged.

Equal wall-clock (--minutes M): training stops after M minutes; pass as
    --steps what the algorithm makes in M minutes, so that its schedules
    (PPO's lr and clip decay) end near the stop:
    .venv-baselines/bin/python scripts/baselines_sb3.py --algo ppo \
        --env MinAtar/Breakout-v1 --steps 7000000 --minutes 20.4 --seed 0 \
        --out runs/ppo_breakout_wallclock_s0

Outputs (in --out)
    episodes.csv  one row per finished episode:
                  env_steps,seconds,episode_return,length
                  (env_steps = total env steps over all envs at that moment)
    summary.json  algo, env, seed, steps, seconds, steps_per_second,
                  mean_return_last100, num_episodes, hyperparameters, versions.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.metadata
import inspect
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
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize


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

    def __init__(self, csv_path: str, total_steps: int, print_every: float = 30.0,
                 seconds_limit: float | None = None):
        super().__init__()
        self.csv_path = csv_path
        self.total_steps = total_steps
        self.print_every = print_every
        self.seconds_limit = seconds_limit
        self.stopped_at_time_limit = False
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
        if self.seconds_limit is not None and now - self.t0 >= self.seconds_limit:
            # Returning False ends model.learn: a run given a wall-clock budget.
            self.stopped_at_time_limit = True
            return False
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


def extra_versions() -> dict:
    out = {}
    for dist in ("box2d", "mujoco"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def build_minatar(args):
    """The MinAtar PPO / DQN setup (unchanged). Returns (model, env, hp, network)."""
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
    network = "MinAtarCNN: Conv2d(C,16,3,stride 1)-ReLU-Flatten-Linear(1024,128)-ReLU, linear heads (net_arch=[])"
    return model, env, hp, network


ZOO_COMMIT = "22e3ff2450fd92033f7f032915e1f64894a09584"

# rl-baselines3-zoo entries at ZOO_COMMIT (hyperparams/sac.yml, hyperparams/ppo.yml),
# keyed by (algo, env id) -> (zoo entry name, entry without `policy: 'MlpPolicy'`).
# Values as in the yml; `lin_X` is a linear schedule X -> 0; activation_fn is
# given by name and mapped to torch.nn in `build_continuous`.
ZOO = {
    ("sac", "Pendulum-v1"): ("Pendulum-v1", dict(
        n_timesteps=20000,
        learning_rate=1e-3,
    )),
    ("sac", "LunarLanderContinuous-v3"): ("LunarLanderContinuous-v3", dict(
        n_timesteps=500000,
        batch_size=256,
        learning_rate="lin_7.3e-4",
        buffer_size=1000000,
        ent_coef="auto",
        gamma=0.99,
        tau=0.01,
        train_freq=1,
        gradient_steps=1,
        learning_starts=10000,
        policy_kwargs=dict(net_arch=[400, 300]),
    )),
    ("sac", "HalfCheetah-v5"): ("HalfCheetah-v4", dict(
        n_timesteps=1000000,
        learning_starts=10000,
    )),
    ("ppo", "Pendulum-v1"): ("Pendulum-v1", dict(
        n_envs=4,
        n_timesteps=100000,
        n_steps=1024,
        gae_lambda=0.95,
        gamma=0.9,
        n_epochs=10,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_range=0.2,
        use_sde=True,
        sde_sample_freq=4,
    )),
    ("ppo", "LunarLanderContinuous-v3"): ("LunarLanderContinuous-v3", dict(
        n_envs=16,
        n_timesteps=1000000,
        n_steps=1024,
        batch_size=64,
        gae_lambda=0.98,
        gamma=0.999,
        n_epochs=4,
        ent_coef=0.01,
    )),
    ("ppo", "HalfCheetah-v5"): ("HalfCheetah-v4", dict(
        normalize=True,
        n_envs=1,
        n_timesteps=1000000,
        batch_size=64,
        n_steps=512,
        gamma=0.98,
        learning_rate=2.0633e-05,
        ent_coef=0.000401762,
        clip_range=0.1,
        n_epochs=20,
        gae_lambda=0.92,
        max_grad_norm=0.8,
        vf_coef=0.58096,
        policy_kwargs=dict(
            log_std_init=-2,
            ortho_init=False,
            activation_fn="nn.ReLU",
            net_arch=dict(pi=[256, 256], vf=[256, 256]),
        ),
    )),
}

ACTIVATIONS = {"nn.ReLU": torch.nn.ReLU, "nn.Tanh": torch.nn.Tanh}

# Constructor arguments that are bookkeeping, not hyperparameters.
_NOT_HPARAMS = {"policy", "env", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model",
                "stats_window_size", "policy_kwargs"}


def _jsonable(v):
    if isinstance(v, type):
        return v.__name__
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if callable(v):
        return getattr(v, "__name__", repr(v))
    return v


def build_continuous(args):
    """SAC / PPO on a plain gymnasium env with the zoo hyperparameters.
    Returns (model, env, hp, network)."""
    key = (args.algo, args.env)
    if key not in ZOO:
        raise SystemExit(f"no zoo hyperparameters for --algo {args.algo} --env {args.env}; "
                         f"supported: {sorted(ZOO)} and MinAtar/<Game>-v1 with ppo/dqn")
    entry, zoo = ZOO[key]
    kwargs = copy.deepcopy(zoo)
    n_envs = kwargs.pop("n_envs", 1)
    kwargs.pop("n_timesteps")  # replaced by --steps
    normalize = kwargs.pop("normalize", False)
    replaced = dict(n_timesteps=args.steps)
    if args.learning_starts is not None:
        if args.algo != "sac":
            raise SystemExit("--learning-starts only applies to --algo sac")
        replaced["learning_starts"] = args.learning_starts
        kwargs["learning_starts"] = args.learning_starts
    for name in ("learning_rate", "clip_range"):
        v = kwargs.get(name)
        if isinstance(v, str):
            assert v.startswith("lin_"), v
            kwargs[name] = linear(float(v[len("lin_"):]))
    pk = kwargs.get("policy_kwargs", {})
    if "activation_fn" in pk:
        pk["activation_fn"] = ACTIVATIONS[pk["activation_fn"]]

    # Monitor (inside) -> DummyVecEnv -> [VecNormalize]; Monitor sees raw rewards.
    env = make_vec_env(args.env, n_envs=n_envs, seed=args.seed, vec_env_cls=DummyVecEnv)
    normalize_kwargs = None
    if normalize:
        normalize_kwargs = dict(norm_obs=True, norm_reward=True, gamma=kwargs.get("gamma", 0.99))
        env = VecNormalize(env, **normalize_kwargs)

    cls = SAC if args.algo == "sac" else PPO
    model = cls("MlpPolicy", env, **kwargs, seed=args.seed, device="cpu", verbose=0)

    # Effective hyperparameters: SB3 constructor defaults updated with the zoo values.
    effective = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()
                 if k not in _NOT_HPARAMS and v.default is not inspect.Parameter.empty}
    effective.update({k: v for k, v in kwargs.items() if k != "policy_kwargs"})
    for name in ("learning_rate", "clip_range"):
        if isinstance(zoo.get(name), str):
            effective[name] = f"linear {float(zoo[name][len('lin_'):])} -> 0 over --steps"
    pol = model.policy
    effective["policy"] = dict(
        net_arch=pol.net_arch,
        activation_fn=pol.activation_fn.__name__,
        **({"ortho_init": pol.ortho_init, "log_std_init": pol.log_std_init}
           if args.algo == "ppo" else {"n_critics": model.critic.n_critics}),
        optimizer=pol.optimizer_class.__name__,
        optimizer_kwargs=pol.optimizer_kwargs,
    )
    if args.algo == "sac":
        effective["target_entropy"] = float(model.target_entropy)
    effective["n_envs"] = n_envs
    if normalize_kwargs is not None:
        v = inspect.signature(VecNormalize.__init__).parameters
        effective["VecNormalize"] = dict(
            {k: v[k].default for k in ("clip_obs", "clip_reward", "epsilon")}, **normalize_kwargs)
    hp = _jsonable(dict(
        source=f"rl-baselines3-zoo@{ZOO_COMMIT} hyperparams/{args.algo}.yml entry `{entry}`; "
               "SB3 defaults for the rest",
        zoo_entry=dict(policy="MlpPolicy", **zoo),
        replaced=replaced,
        effective=effective,
    ))
    network = (f"SB3 MlpPolicy ({cls.__name__}): net_arch={_jsonable(pol.net_arch)}, "
               f"activation={pol.activation_fn.__name__}")
    return model, env, hp, network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=["ppo", "dqn", "sac"], required=True)
    p.add_argument("--env", default="MinAtar/Breakout-v1")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--print-every", type=float, default=30.0)
    p.add_argument("--minutes", type=float, default=None,
                   help="stop after this much wall-clock training time (an equal-"
                        "wall-clock comparison); schedules still span --steps")
    p.add_argument("--learning-starts", type=int, default=None,
                   help="SAC only: override the zoo/SB3 learning_starts (e.g. for smoke tests)")
    args = p.parse_args()

    minatar_env = args.env.startswith("MinAtar/")
    if minatar_env and args.algo not in ("ppo", "dqn"):
        p.error("MinAtar envs support --algo ppo|dqn")
    if minatar_env and args.learning_starts is not None:
        p.error("--learning-starts is not supported for MinAtar (DQN uses the MinAtar paper value)")
    if not minatar_env and args.algo == "dqn":
        p.error("continuous-control envs support --algo sac|ppo")

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    if minatar_env:
        model, env, hp, network = build_minatar(args)
    else:
        model, env, hp, network = build_continuous(args)

    print(model.policy, flush=True)
    n_params = sum(p.numel() for p in model.policy.parameters())
    print(f"algo={args.algo} env={args.env} steps={args.steps} seed={args.seed} params={n_params}", flush=True)

    if args.minutes is not None and not args.minutes > 0:
        p.error("--minutes must be positive")
    cb = EpisodeLogger(os.path.join(args.out, "episodes.csv"), args.steps, args.print_every,
                       None if args.minutes is None else args.minutes * 60)
    t0 = time.time()
    model.learn(total_timesteps=args.steps, callback=cb)
    seconds = time.time() - t0

    summary = dict(
        algo=args.algo,
        env=args.env,
        seed=args.seed,
        steps=int(model.num_timesteps),
        requested_steps=args.steps,
        minutes_limit=args.minutes,
        stopped_at_time_limit=cb.stopped_at_time_limit,
        seconds=round(seconds, 2),
        steps_per_second=round(model.num_timesteps / seconds, 2),
        mean_return_last100=cb.mean100(),
        num_episodes=len(cb.returns),
        hyperparameters=hp,
        network=network,
        policy_params=n_params,
        versions=dict(
            torch=torch.__version__,
            stable_baselines3=stable_baselines3.__version__,
            gymnasium=gym.__version__,
            minatar=getattr(minatar, "__version__", "1.0.15"),
            numpy=np.__version__,
            python=platform.python_version(),
            **({} if minatar_env else extra_versions()),
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
