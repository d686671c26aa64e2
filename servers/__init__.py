"""A compute server (party 0 or 1): ``python -m servers --rank 0|1 --config FILE``."""
