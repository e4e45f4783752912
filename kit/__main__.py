"""`python -m kit --target cpu-local`: build the target's kit (base image, app image, model) where it changed."""

from __future__ import annotations

import sys

from kit.build import main

sys.exit(main())
