"""`python -m blindmatch`: the command line."""

import sys

from blindmatch.cli import main

sys.exit(main())
