"""fastsock-example-impl: a loop of its own for fastsock to measure (see gather.py)."""
