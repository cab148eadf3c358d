"""Bad declarations on purpose: no FASTSOCK_CONTRACT."""

from sample_impls.plain import stream_send

__all__ = ["stream_send"]
