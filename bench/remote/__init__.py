"""The remote stage: a case's peer on another host.

``protocol`` (the control connection's bounded handshake), ``server``
(``fastsock-bench serve``: runs the run stage's peer loop per case) and
``client`` (the measured side's :class:`~bench.remote.client.RemotePeer`).
"""
