"""python -m medjax.train --config=configs/pretrain.py --workdir=DIR [--config.key=value ...]

Parses flags and calls ``medjax.training.run(config, workdir)``. Restarting the
same command resumes from the newest complete checkpoint in WORKDIR.

Several processes (hosts): ``jax.distributed`` starts first, from --coordinator,
--num_processes and --process_id, else from MEDJAX_* variables (launch/local.sh,
launch/mpirun.sh), SLURM (srun) or Open MPI (``medjax.parallel.initialize``). Only
process 0 logs and prints; a process that fails exits at once (status 1) so the
others notice within the heartbeat timeout instead of waiting at shutdown.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", "workdir", "Where checkpoints and metrics go.")
flags.DEFINE_string("coordinator", None, "Multi-process runs: HOST:PORT of process 0's "
                    "coordinator (default: MEDJAX_COORDINATOR, SLURM or Open MPI).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes "
                     "(default: MEDJAX_NUM_PROCESSES, SLURM or Open MPI; none: one process).")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's rank "
                     "(default: MEDJAX_PROCESS_ID, SLURM or Open MPI).")
flags.DEFINE_float("distributed_timeout", 300.0, "Seconds for all processes to connect to the "
                   "coordinator before giving up with an error.")
flags.DEFINE_integer("heartbeat_timeout", None, "Seconds without a heartbeat after which a "
                     "process counts as dead and the others stop (default: "
                     "MEDJAX_HEARTBEAT_TIMEOUT or 30).")
flags.mark_flags_as_required(["config"])


def _exit_now(message: str | None, status: int = 1):
    """Several processes: exits at once (os._exit), skipping the jax.distributed shutdown
    barrier, where a failed process would otherwise wait up to 5 minutes for peers that
    are themselves blocked waiting for it; they notice its death within the heartbeat
    timeout instead."""
    if message:
        print(message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging as absl_logging
    if not FLAGS["verbosity"].present:  # quiet library INFO logs; -v=0 shows them
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("medjax").setLevel(logging.INFO)
    from medjax.parallel import initialize
    try:  # before anything touches a JAX backend
        cluster = initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                             timeout_s=FLAGS.distributed_timeout,
                             heartbeat_timeout_s=FLAGS.heartbeat_timeout)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"medjax.train: error: {e}")
    several = cluster is not None
    if several and cluster.process_id != 0:  # process 0 logs for everyone; warnings stay
        logging.getLogger("medjax").setLevel(logging.WARNING)
    from medjax.data.sources import DataError
    from medjax.training import run
    from medjax.training.hooks import NonFiniteError
    try:
        last = run(FLAGS.config, FLAGS.workdir)
    except (DataError, FileNotFoundError, FileExistsError, ValueError, NonFiniteError) as e:
        if several:
            _exit_now(f"medjax.train: error: {e}")
        sys.exit(f"medjax.train: error: {e}")
    except BaseException as e:  # a bug or Ctrl-C: as usual, but never a hang at shutdown
        if not several or isinstance(e, SystemExit):
            raise
        traceback.print_exc()
        _exit_now(None, 130 if isinstance(e, KeyboardInterrupt) else 1)
    if not several or cluster.process_id == 0:
        print("final:", last.summary() if last else
              "nothing new (the workdir's run was already complete)")


def _parse_or_exit(argv):
    """Parses flags; a bad flag or --config override is one clear line, not a traceback."""
    try:
        return FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - anything raised while reading the config
        msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        msg = msg.replace("\\n", " ").replace("\\'", "'").strip("'\"")
        if "Traceback" in msg:  # an exception inside a config file: keep its last line
            msg = msg.strip().splitlines()[-1]
        msg = " ".join(msg.split())
        sys.exit(f"medjax.train: error: {msg}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_or_exit)
