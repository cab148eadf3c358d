"""The presentation stage: a report shown to people.

``summary`` (the run's closing tables), ``formats`` (compare and speedup as
a terminal table, Markdown or JSON), ``figures`` (matplotlib) and ``html``
(the self-contained report).  Reads reports through :mod:`bench.analysis`
only; measures nothing.
"""
