"""bench: everything that measures fastsock; ``fastsock`` holds only what is measured.

The stages, one subpackage each, top to bottom.  A module imports from its
own stage and from stages below it, never from one above; stages on one
line (``|``) are independent of each other.  ``tests/test_layout.py``
reads the table below and checks every import of every module against it.

.. stages::

    cli                   the command line: one module per subcommand
    crosscheck            the suite's compiled cases beside iperf3 and sockperf
    remote                serve a peer to another host, and the client of one
    run | present         measure cases into a report | show a report (tables, figures, HTML)
    analysis              the report (schema, loader), units, statistics, compare, shaping

Why this order: ``analysis`` owns the report, the contract between a run
and everything that reads one, so every stage may read it and it reads
nothing.  ``run`` measures and writes reports; ``present`` only reads them;
neither knows the other (the closing summary of a run is printed by
``cli``).  ``remote`` extends ``run`` across hosts: its server runs the
run stage's peer loop, and a run's worker gets the remote client from
``cli`` as its case's opener, so ``run`` never imports ``remote``.
"""
