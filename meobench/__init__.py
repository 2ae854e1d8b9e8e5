"""meobench: benchmark Mixture-of-Experts layers against Merging Experts into One (MEO)."""

import os

# Kineto, the torch profiler's backend, prints two status lines to stderr for every
# profiled call below log level 6; meobench profiles every case, so it silences them.
# Set KINETO_LOG_LEVEL yourself to see them.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

__version__ = "0.1.0"
