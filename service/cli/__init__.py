"""The `roomtone` command line: one module per subcommand, each a thin face over plain functions.

May import anything in service/ and encoder/; nothing in service/ imports cli.
"""
