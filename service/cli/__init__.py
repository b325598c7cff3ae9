"""The `roomtone` command line: one module per subcommand, each a thin face over plain functions."""
