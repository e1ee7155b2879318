"""`python -m fnas` is the `fnas` command."""

import sys

from fnas_cli import main

sys.exit(main())
