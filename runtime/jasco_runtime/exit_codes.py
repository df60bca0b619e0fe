"""The exit codes of every jasco-trt command (jasco-run, jasco-export, jasco-serve); README "Error contract"."""
from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed (verify, the parity gate) or a bug (with its traceback)
EXIT_BAD_INPUT = 2  # bad input or settings: one line naming the problem and the fix, nothing written
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, SIGTERM (timeout, docker stop, Kubernetes)
