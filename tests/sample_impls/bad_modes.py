"""Bad declarations on purpose: a mode the contract does not have."""

from sample_impls.plain import stream_send

FASTSOCK_CONTRACT = 1
MODES = ("blocking", "turbo")
__all__ = ["stream_send"]
