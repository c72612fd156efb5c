"""`python -m deeprlm` runs the command line."""

from deeprlm.cli import main

raise SystemExit(main())
