"""The ``pyserini-qpeft`` command line. Sub-commands live in their own modules and are imported on use."""
