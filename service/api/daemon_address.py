"""Where the client commands find the daemon's gRPC API (kept free of grpc imports so --help stays fast)."""

from __future__ import annotations

import argparse
import os

from service.daemon_vocabulary import ADDRESS_ENV
from service.daemon_vocabulary import DEFAULT_GRPC_ADDRESS as DEFAULT_ADDRESS


def add_address_argument(parser: argparse.ArgumentParser) -> None:
    """The --address option every client command takes (default $ROOMTONE_ADDRESS or `DEFAULT_ADDRESS`)."""
    parser.add_argument("--address", default=os.environ.get(ADDRESS_ENV, DEFAULT_ADDRESS),
                        help=f"host:port of the roomtone daemon's gRPC API (env {ADDRESS_ENV})")
