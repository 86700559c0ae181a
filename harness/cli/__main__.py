"""``python -m alertbench.harness.cli``: the same command line as the ``alertbench`` script.

``vtp-bench`` re-runs itself this way inside a network namespace, where the console script's
path may not be what ``sys.executable`` would find.
"""

import sys

from alertbench.harness.cli import main

sys.exit(main())
