"""Jobs as recipe classes (clear, train; sample next): the CLI, tests and benchmarks all call these."""
