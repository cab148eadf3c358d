"""bench: everything that measures fastsock (runner, compare, plots, report).

``fastsock`` holds only what is measured; this package holds the rest.
"""
