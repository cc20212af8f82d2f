"""Drives the real `huggingface_hub` client (pinned: huggingface_hub==2.4.0) against the Hub emulator.

Usage: python3 hf_client.py '<json list of operations>'

The endpoint, token and cache come from the environment (HF_ENDPOINT, HF_TOKEN, HF_HOME), exactly as a
user would set them. Each operation's result (or the error it raised) is collected, and one JSON document
{"version": ..., "results": [...], "log": [...]} is printed on stdout; "log" holds the client's warnings. Used by hf-fidelity.test.ts.
"""

import json
import logging
import os
import sys
import traceback

import huggingface_hub
from huggingface_hub import HfApi, hf_hub_download, snapshot_download


def file_json(f):
    if isinstance(f, huggingface_hub.hf_api.RepoFolder):
        return {"type": "directory", "path": f.path, "oid": f.tree_id}
    lfs = None
    if f.lfs is not None:
        lfs = {"sha256": f.lfs.sha256, "size": f.lfs.size, "pointer_size": f.lfs.pointer_size}
    return {"type": "file", "path": f.path, "size": f.size, "blob_id": f.blob_id, "lfs": lfs}


def run(api, op):
    kind = op["op"]
    if kind == "snapshot":
        return snapshot_download(op["repo"], revision=op.get("revision"), local_dir=op.get("local_dir"))
    if kind == "download":
        return hf_hub_download(op["repo"], op["filename"], revision=op.get("revision"), local_dir=op.get("local_dir"))
    if kind == "tree":
        return [
            file_json(f)
            for f in api.list_repo_tree(
                op["repo"], path_in_repo=op.get("path"), recursive=op.get("recursive", False), revision=op.get("revision")
            )
        ]
    if kind == "paths_info":
        return [file_json(f) for f in api.get_paths_info(op["repo"], op["paths"], revision=op.get("revision"))]
    if kind == "info":
        info = api.model_info(op["repo"], revision=op.get("revision"), files_metadata=op.get("files_metadata", False))
        return {
            "id": info.id,
            "sha": info.sha,
            "private": info.private,
            "gated": info.gated,
            "siblings": [
                {
                    "rfilename": s.rfilename,
                    "size": s.size,
                    "blob_id": s.blob_id,
                    "lfs": None if s.lfs is None else {"sha256": s.lfs.sha256, "size": s.lfs.size},
                }
                for s in (info.siblings or [])
            ],
        }
    if kind == "list_models":
        return [m.id for m in api.list_models(search=op.get("search"), author=op.get("author"), limit=op.get("limit"))]
    if kind == "refs":
        refs = api.list_repo_refs(op["repo"])
        return {
            "branches": {b.name: b.target_commit for b in refs.branches},
            "tags": {t.name: t.target_commit for t in refs.tags},
        }
    if kind == "file_exists":
        return api.file_exists(op["repo"], op["filename"], revision=op.get("revision"))
    raise ValueError(f"unknown op {kind!r}")


class Collect(logging.Handler):
    """Keeps what huggingface_hub tells the user (e.g. "Rate limited. Waiting 2.0s before retry")."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    ops = json.loads(sys.argv[1])
    log = Collect()
    logging.getLogger("huggingface_hub").addHandler(log)
    api = HfApi()
    results = []
    for op in ops:
        try:
            results.append({"ok": run(api, op)})
        except Exception as e:  # the test asserts on the error class the client raised
            response = getattr(e, "response", None)
            results.append(
                {
                    "error": {
                        "type": type(e).__name__,
                        "mro": [c.__name__ for c in type(e).__mro__],
                        "status": getattr(response, "status_code", None),
                        "message": str(e)[:2000],
                        "traceback": traceback.format_exc()[-4000:],
                    }
                }
            )
    print(
        json.dumps(
            {"version": huggingface_hub.__version__, "endpoint": os.environ.get("HF_ENDPOINT"), "results": results, "log": log.lines}
        )
    )


if __name__ == "__main__":
    main()
