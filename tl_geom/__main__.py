"""python -m tl_geom: the tl-geom command line."""

import sys

from tl_geom.app.cli import main

sys.exit(main())
