"""Model training (PyTorch, ``requirements-train.txt``); never imported by the app or the CLI."""
