"""``python -m launcher CONFIG.yaml``: the torchrun worker entry (see launcher.distributed)."""

import sys

from launcher.distributed import main

sys.exit(main())
