from collections.abc import Sequence

def create_environ(inherit_environ: Sequence[str] | None, locale: bool,
                   copy_all: bool) -> dict[str, str]: ...
