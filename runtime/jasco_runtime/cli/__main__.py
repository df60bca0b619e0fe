"""``python -m jasco_runtime.cli`` = ``jasco-run``."""
import sys

from . import main

sys.exit(main())
