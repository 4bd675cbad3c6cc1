"""Fails to load on purpose, to show how a load error reaches the control plane."""


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        raise RuntimeError("broken on purpose: this example model never loads")
