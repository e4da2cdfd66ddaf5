"""One module per ``bigkg`` sub-command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; ``launcher.cli`` discovers them, so adding a command
never touches a shared file.
"""
