"""``vos weights ...``: download, list and verify the official SEEM checkpoints (through the Hugging Face hub).

The ``vos`` CLI wires this in with ``register(subparsers)``; every leaf parser sets ``func(args) -> int``. Errors
are :class:`vos.errors.VosError` and reach the user through ``vos.cli.main``.
"""

from __future__ import annotations

import argparse

from huggingface_hub import constants

from vos.seem.download import (
    CHECKPOINTS,
    CheckpointInfo,
    download_checkpoint,
    hub_cache_dir,
    local_checkpoint,
    preloaded_path,
    verify_checkpoint,
    weights_dir,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``weights download NAME [--force] [--quiet]``, ``weights list`` and ``weights verify [NAME ...]``."""
    weights = subparsers.add_parser("weights", help="download, list or verify the SEEM model weights")
    weights.set_defaults(func=lambda args: _print_help(weights))
    actions = weights.add_subparsers(dest="weights_command", metavar="{download,list,verify}")

    download = actions.add_parser(
        "download", help="download an official checkpoint into the Hugging Face cache (HF_HUB_CACHE)",
        description="Download through huggingface_hub: HF_ENDPOINT (mirror), HF_TOKEN, HF_HUB_CACHE and "
                    "HF_HUB_OFFLINE apply. A checkpoint already cached is not downloaded again.")
    download.add_argument("name", choices=sorted(CHECKPOINTS), help="checkpoint name")
    download.add_argument("--force", action="store_true", help="download again even if cached (repairs a bad file)")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(func=_cmd_download)

    listing = actions.add_parser("list", help="show the known checkpoints, their sizes and where they are")
    listing.set_defaults(func=_cmd_list)

    verify = actions.add_parser("verify", help="re-hash local checkpoints against the hub's recorded SHA-256")
    verify.add_argument("names", nargs="*", metavar="NAME",
                        help=f"checkpoints to verify ({', '.join(CHECKPOINTS)}; default: every local one)")
    verify.set_defaults(func=_cmd_verify)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_download(args: argparse.Namespace) -> int:
    print(download_checkpoint(args.name, force=args.force, progress=not args.quiet))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for info in CHECKPOINTS.values():
        print(f"{info.name:<12} {info.description}\n{'':<12} {_where(info)}")
    print(f"hub: {constants.ENDPOINT} (HF_ENDPOINT); Hugging Face cache: {hub_cache_dir()} (HF_HUB_CACHE); "
          f"pre-loaded weights folder: {weights_dir()} (VOS_WEIGHTS_DIR / SEEM_VOS_HOME)")
    return 0


def _where(info: CheckpointInfo) -> str:
    source = f"{info.repo_id}/{info.filename} at {info.revision}"
    local = local_checkpoint(info)
    if local is None:
        size = _gigabytes(info.size) if info.size is not None else "size unknown"
        return f"{source}, {size}, not downloaded"
    state = "pre-loaded" if local == preloaded_path(info) else "cached"
    return f"{source}, {_gigabytes(local.stat().st_size)}, {state}: {local}"


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def _cmd_verify(args: argparse.Namespace) -> int:
    names = args.names or [info.name for info in CHECKPOINTS.values() if local_checkpoint(info) is not None]
    if not names:
        print("no checkpoint is downloaded, nothing to verify")
        return 0
    failed = 0
    for name in names:
        result = verify_checkpoint(name)
        if result.ok:
            print(f"{name}: OK, {result.path} has SHA-256 {result.sha256} (recorded by {result.source})")
        else:
            failed += 1
            print(f"{name}: MISMATCH, {result.path} has SHA-256 {result.sha256} but {result.source} records "
                  f"{result.expected}; repair it with `vos weights download {name} --force`")
    return 1 if failed else 0
