"""The `roomtone` command line: one module per subcommand (`<command>_command.py`, so no name repeats one in
encoder/ or another wing), each a thin face over plain functions.

May import anything in service/ and encoder/; nothing in service/ imports cli.
"""
