"""`python -m lab ...` (what torchrun runs: `torchrun --nproc_per_node=2 -m lab train ...`)."""

from .cli import main

if __name__ == "__main__":  # a spawned worker process re-imports this module: it must not run the CLI again
    main()
