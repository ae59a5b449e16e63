"""Muesli (Hessel et al. 2021) in JAX/Haiku.

`import muesli_jax.losses` needs only the core dependencies (jax, haiku,
optax, rlax, chex, numpy); training (`muesli_jax.training`,
scripts/train.py) needs the `train` extra. Nothing is imported here, so
importing one module never pulls in the others.
"""

import time as _time

__version__ = "0.2.0"
# When the package was first imported: a run reports its start-up (imports,
# envs, networks) as the time from here to its training loop.
LOADED_AT = _time.time()
