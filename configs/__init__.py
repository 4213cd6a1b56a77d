# Makes the config tree an importable package: Hydra reads it as pkg://lab.resources.configs
# (its package source only accepts folders holding an __init__.py), in a wheel as in a checkout.
