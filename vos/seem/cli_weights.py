"""``vos weights ...`` sub-commands: list and download the official SEEM checkpoints.

The ``vos`` CLI wires this in with ``register(subparsers)``; every leaf parser sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.errors import DownloadError
from vos.seem.download import CHECKPOINTS, default_cache_dir, download_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``weights download NAME [--dir DIR] [--quiet]`` and ``weights list [--dir DIR]``."""
    weights = subparsers.add_parser("weights", help="download or list the SEEM model weights")
    weights.set_defaults(func=lambda args: _print_help(weights))
    actions = weights.add_subparsers(dest="weights_command", metavar="{download,list}")

    download = actions.add_parser("download", help="download an official checkpoint (resumable)")
    download.add_argument("name", choices=sorted(CHECKPOINTS), help="checkpoint name")
    download.add_argument("--dir", type=Path, default=None, help=f"target folder (default: {default_cache_dir()})")
    download.add_argument("--quiet", action="store_true", help="no progress output")
    download.set_defaults(func=_cmd_download)

    listing = actions.add_parser("list", help="show the known checkpoints and whether they are downloaded")
    listing.add_argument("--dir", type=Path, default=None, help="folder to look in (default: the cache folder)")
    listing.set_defaults(func=_cmd_list)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_download(args: argparse.Namespace) -> int:
    try:
        path = download_checkpoint(args.name, args.dir, progress=not args.quiet)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    folder = Path(args.dir) if args.dir else default_cache_dir()
    for info in CHECKPOINTS.values():
        local = folder / info.filename
        state = f"downloaded: {local}" if local.is_file() else "not downloaded"
        print(f"{info.name:<12} {info.filename:<20} {info.description}  [{state}]")
    return 0
