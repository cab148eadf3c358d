"""The run stage: cases measured into a pyperf report.

``matrix`` (which cases), ``impls`` (the impls and where each applies),
``conformance`` and ``checks`` (the loop tests, run against any impl before
it is measured), ``transports`` (connected socket pairs),
``peer`` (the other end, in its own process), ``ends`` (a case's measured
socket and peer, set up), ``scenarios`` (the timed units, one per
scenario), ``eventloop`` (the event-loop impls' connection and peer
watch), ``worker`` (one case's lifecycle inside a pyperf worker),
``lockstep`` (a base and a candidate timed value by value),
``fingerprint`` (the environment) and ``runner`` (pyperf over the
matrix, saving after every case); ``count`` (``run --measure
instructions``: cases counted under valgrind), with ``count_worker``
(inside valgrind), ``callgrind`` (the tool's command and files) and
``intervals`` (a case's intervals to instructions per message).
"""
