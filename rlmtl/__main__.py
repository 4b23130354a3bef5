"""`python -m rlmtl` (what `torchrun -m rlmtl` launches) runs the CLI."""

from rlmtl.cli import main

raise SystemExit(main())
