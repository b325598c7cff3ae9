"""Benchmarks and measurement scripts: each module is run from the repository root as
``python -m bench.NAME`` (``--help`` says what it measures). They import each other as ``bench.NAME``
and the suite's launchers as ``tests.service.daemon_support``; none edits the import path."""
