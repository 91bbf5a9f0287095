"""python -m medjax.train --config=configs/pretrain.py --workdir=DIR [--config.key=value ...]

Parses flags and calls ``medjax.training.run(config, workdir)``. Restarting the
same command resumes from the newest complete checkpoint in WORKDIR.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", "workdir", "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging as absl_logging
    if not FLAGS["verbosity"].present:  # quiet library INFO logs; -v=0 shows them
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("medjax").setLevel(logging.INFO)
    from medjax.data.sources import DataError
    from medjax.training import run
    try:
        last = run(FLAGS.config, FLAGS.workdir)
    except (DataError, FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"medjax.train: error: {e}")
    print("final:", {k: round(float(v), 4) for k, v in last.items()})


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
