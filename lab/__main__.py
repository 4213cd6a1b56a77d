"""`python -m lab ...` (what torchrun runs: `torchrun --nproc_per_node=2 -m lab train ...`)."""

from .cli import main

main()
