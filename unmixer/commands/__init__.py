"""Sub-commands of ``python -m unmixer``, one module each."""
