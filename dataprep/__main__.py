"""`python -m dataprep ...` is `tessera ...`."""

import sys

from dataprep.cli import main

sys.exit(main())
