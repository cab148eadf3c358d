"""Bad on purpose: fails while importing."""

raise RuntimeError("this module cannot be imported\nsecond line")
