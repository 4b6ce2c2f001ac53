"""``python -m pyserini_qpeft ...`` is the ``pyserini-qpeft`` console script."""
from .cli.main import cli

if __name__ == "__main__":
    cli(prog_name="pyserini-qpeft")
