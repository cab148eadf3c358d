"""The run stage: cases measured into a pyperf report.

``matrix`` (which cases), ``transports`` (connected socket pairs),
``peer`` (the other end, in its own process), ``worker`` (one case's set-up
and timed function inside a pyperf worker), ``lockstep`` (a base and a
candidate timed value by value), ``fingerprint`` (the environment) and
``runner`` (pyperf over the matrix, saving after every case).
"""
