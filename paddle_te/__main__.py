"""`python -m paddle_te`: report this build and machine and self-check every usable backend."""

import sys

from ._check import main

sys.exit(main())
