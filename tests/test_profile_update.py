"""scripts/profile_update.py times the update and groups XLA's trace."""

import re

from conftest import run_script

TINY = ("--config", "cartpole.py", "--config.batch_size=4",
        "--config.sequence_length=4", "--config.hidden_size=16",
        "--config.head_size=16", "--config.num_blocks=1")


def test_profile_reports_the_update_and_its_ops(tmp_path):
  proc = run_script("profile_update.py", *TINY, "--updates", "5", "--top", "3",
                    cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  first = proc.stdout.splitlines()[0]
  match = re.search(r"([\d.]+) ms an update, ([\d.e-]+) GFLOP, temporaries "
                    r"([\d.]+) MiB", first)
  assert match and all(float(g) > 0 for g in match.groups()), first
  ops = re.search(r"ops in the trace: (\d+), ([\d.]+) ms per update",
                  proc.stdout)
  assert ops and int(ops.group(1)) > 10 and float(ops.group(2)) > 0
  # Three groups by source and three single ops, each with its time.
  lines = proc.stdout.splitlines()
  by_source = lines.index("ms per update, by source:")
  assert all(re.match(r"\s+[\d.]+\s+\S", l)
             for l in lines[by_source + 1:by_source + 4])
  assert "slowest ops:" in lines


def test_bad_option_is_a_one_line_error(tmp_path):
  proc = run_script("profile_update.py", *TINY, "--updates", "0", cwd=tmp_path)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith("error:")
  assert len(proc.stderr.strip().splitlines()) == 1
