"""The dealer (crypto provider) process: ``python -m dealer --config FILE``."""
