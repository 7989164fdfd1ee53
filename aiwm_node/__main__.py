"""`python -m aiwm_node run|status` (the same as the `aiwm-node` command)."""

import sys

from aiwm_node.cli import main

sys.exit(main())
