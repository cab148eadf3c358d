"""The analysis stage: what a report is, and what it says.

``report`` (the schema, the loader, atomic writes), ``units`` (seconds to
the figures people read), ``stats`` (the statistics of a verdict),
``compare`` (two reports; the twins' speedup inside one) and ``shaping``
(orders and headline figures shared by every presentation).  Imports no
other stage.
"""
