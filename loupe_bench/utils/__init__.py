"""Small shared helpers: atomic file writing, hashing, provenance (code version, package versions)."""
from .io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, sha256_file, stable_hash
from .provenance import code_version, environment_info

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "sha256_file",
    "stable_hash",
    "code_version",
    "environment_info",
]
