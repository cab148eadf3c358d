"""Bad declarations on purpose: a contract newer than fastsock's."""

from sample_impls.plain import stream_send

FASTSOCK_CONTRACT = 99
__all__ = ["stream_send"]
