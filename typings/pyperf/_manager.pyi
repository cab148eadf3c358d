from typing import Any

from pyperf import Runner

class Manager:
    def __init__(self, runner: Runner, python: str | None = ...) -> None: ...
    def worker_cmd(self, calibrate_loops: int, calibrate_warmups: int, wpipe: Any) -> list[str]: ...
