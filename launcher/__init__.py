"""Process entry points: the ``bigkg`` command and the torchrun worker entry."""
