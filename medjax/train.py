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
flags.DEFINE_bool("print_config", False, "Print the resolved config (the file's values with "
                  "the --config.* overrides) and exit.")
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
    if FLAGS.print_config:
        print(FLAGS.config)
        return
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
    if "online" in FLAGS.config:  # configs/online_dpo.py: rounds of sample, score, train
        from medjax.online import run
    from medjax.training.hooks import NonFiniteError
    try:
        last = run(FLAGS.config, FLAGS.workdir)
    except (DataError, OSError, ValueError, NonFiniteError) as e:  # bad input, files, disk
        line = "medjax.train: error: " + " ".join(str(e).split())
        if several:
            _exit_now(line)
        sys.exit(line)
    except BaseException as e:  # a bug or Ctrl-C: as usual, but never a hang at shutdown
        if not several or isinstance(e, SystemExit):
            raise
        peer = _peer_failure(e)
        if peer:  # another process died: its own output says why
            _exit_now(f"medjax.train: error: {peer}")
        traceback.print_exc()
        _exit_now(None, 130 if isinstance(e, KeyboardInterrupt) else 1)
    if not several or cluster.process_id == 0:
        print("final:", last.summary() if last else
              "nothing new (the workdir's run was already complete)")


def _peer_failure(e: BaseException) -> str | None:
    """One line for a collective that failed because another process stopped (the
    runtime's errors for it are deep Gloo / XLA tracebacks), else None."""
    import re
    text = f"{type(e).__name__}: {e}"
    markers = ("Gloo", "gloo", "heartbeat", "Connection reset", "connection closed",
               "Socket closed", "UNAVAILABLE", "coordination service", "DEADLINE_EXCEEDED",
               "preempted", "Connection refused")
    if not any(m in text for m in markers):
        return None
    task = re.search(r"task[:_ ](\d+)", text)
    who = f"process {task.group(1)}" if task else "another process"
    first = text.strip().splitlines()[0][:200]
    return (f"{who} stopped or became unreachable, so this process stopped too (see that "
            f"process's output for why; the runtime said: {first})")


def _config_file(argv):
    """(path, config) of ``--config=PATH[:ARG]`` in argv, loaded without the overrides;
    None if there is no such flag or the file fails (its own error is reported later)."""
    import importlib.util
    spec_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec_arg is None:
        return None
    path, _, arg = spec_arg.partition(":")
    try:
        spec = importlib.util.spec_from_file_location("medjax_user_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return path, module.get_config(arg or None)
    except Exception:  # noqa: BLE001
        return None


def _unknown_key(argv) -> str | None:
    """'--config.KEY: no such key; did you mean --config.OTHER?' for the first override
    of a key the config file does not have (None if there is none or the file fails)."""
    from medjax.configs import _keys, closest_key
    loaded = _config_file(argv)
    if loaded is None:
        return None
    path, config = loaded
    known = set(_keys(config))
    for a in argv:
        if a.startswith("--config.") and "=" in a:
            key = a[len("--config."):].split("=", 1)[0]
            if key not in known and not any(k.startswith(key + ".") for k in known):
                owners = _objectives_with(key)
                if owners:
                    return (f"--config.{key}: no such key in {path}: it belongs to the "
                            f"{' and '.join(owners)} objective, not to "
                            f"{config.objective.name!r}")
                hint = closest_key(config, key)
                return (f"--config.{key}: no such key in {path}"
                        + (f"; did you mean --config.{hint}?" if hint and not hint.startswith(
                            "(") else f"; use {hint}" if hint else ""))
    return None


def _objectives_with(key: str) -> list[str]:
    """The objectives whose configs have ``key`` (e.g. objective.loss_type: dpo)."""
    from medjax import objectives
    from medjax.configs import _keys, base
    return [repr(n) for n in objectives.names() if key in _keys(base(n))]


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def _help(argv) -> None:
    """absl's flag help, then the keys of the --config file with defaults and comments."""
    from medjax.configs import describe_keys
    app.usage(shorthelp=True, writeto_stdout=True)
    loaded = _config_file(argv)
    if loaded is None:
        print("\nWith --config=FILE[:VARIANT], --help also lists that config's keys "
              "(--config.KEY=VALUE), their defaults and what they mean.")
    else:
        path, config = loaded
        print(f"\nkeys of {path} (override with --config.KEY=VALUE; defaults shown):")
        print(describe_keys(config))


def _parse_or_exit(argv):
    """Parses flags; a bad flag or --config override is one clear line, not a traceback."""
    if any(a in HELP_FLAGS for a in argv[1:]):
        _help(argv)
        sys.exit(0)
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):
        sys.exit(f"medjax.train: error: --config={spec}: no such file")
    try:
        return FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - anything raised while reading the config
        msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        unknown = None if "Did you mean" in msg else _unknown_key(argv)
        if unknown:
            sys.exit(f"medjax.train: error: {unknown}")
        msg = msg.replace("\\n", " ").replace("\\'", "'").strip("'\"")
        if "Traceback" in msg:  # an exception inside a config file: keep its last line
            msg = msg.strip().splitlines()[-1]
        msg = " ".join(msg.split())
        sys.exit(f"medjax.train: error: {msg}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_or_exit)
