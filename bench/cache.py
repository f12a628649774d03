"""A content-addressed disk cache shared by all jobs of a sweep (docs/design.md §6).

Entries live at `<root>/<kind>/<key>/`, key = sha256 of everything the entry depends on (the fingerprint of the
code that builds its kind included); each is built once under a file lock and renamed into place, so concurrent
or killed jobs never see half an entry. `meta.json` keeps an entry's one-off cost, and time blocked on the lock
comes back as `wait_s` (waiting is not compute: docs/design.md §8).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from bench.fingerprint import BUILD_CODE, build_fingerprint
from bench.redaction import redact_secrets

META_FILE = "meta.json"


def cache_key(payload: Any) -> str:
    """sha256 of the canonical JSON of `payload` (dict keys sorted; non-JSON values via str)."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    kind: str
    key: str
    path: Path
    hit: bool
    meta: dict
    wait_s: float = 0.0  # seconds blocked on the lock while another job built (or held) the entry

    @property
    def build_cost(self) -> dict:
        return self.meta.get("build_cost", {})


class DiskCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def get_or_build(self, kind: str, payload: Any, build: Callable[[Path], dict]) -> CacheEntry:
        """Return the entry for (kind, payload), building it with `build(tmp_dir) -> build_cost` if absent.

        `build` writes its files into the directory it is given and returns the cost dict stored in
        meta.json (e.g. wall_s, device_hours, flops).
        """
        code = build_fingerprint(kind) if kind in BUILD_CODE else None
        key = cache_key(payload if code is None else {"inputs": payload, "code": code})
        final = self.root / kind / key
        if (final / META_FILE).exists():
            return CacheEntry(kind, key, final, True, _read_json(final / META_FILE))
        final.parent.mkdir(parents=True, exist_ok=True)
        asked = time.perf_counter()
        with FileLock(str(final) + ".lock"):
            wait_s = time.perf_counter() - asked
            if (final / META_FILE).exists():  # another job built it while we waited
                return CacheEntry(kind, key, final, True, _read_json(final / META_FILE), wait_s)
            # Temp folders of builders killed mid-build: nobody else builds this key while we hold its lock.
            for stale in final.parent.glob(f".{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.parent / f".{key}.tmp-{os.getpid()}"
            tmp.mkdir()
            try:
                started = time.time()
                build_cost = build(tmp)
                meta = {
                    "kind": kind,
                    "key": key,
                    "payload": redact_secrets(payload) if isinstance(payload, dict) else payload,
                    "code_fingerprint": code,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_cost": {"wall_s": time.time() - started, **(build_cost or {})},
                }
                (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
                if final.exists():  # a half-built leftover from a crashed job that held no meta.json
                    shutil.rmtree(final)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return CacheEntry(kind, key, final, False, meta, wait_s)


def _read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)
