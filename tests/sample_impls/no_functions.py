"""Bad declarations on purpose: none of the contract's functions."""

FASTSOCK_CONTRACT = 1


def send_everything() -> None:
    """Not a contract function."""
