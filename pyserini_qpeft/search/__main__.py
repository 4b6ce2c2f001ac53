"""Entry point of ``python -m pyserini_qpeft.search``."""
from .compat import main

main()
