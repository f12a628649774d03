"""Secrets never reach a record, a log line or W&B (docs/design.md §10): recognise and drop them.

Pure functions, used by the loggers (config sent to W&B) and the run records (config, command line).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

# A key is secret-looking when one of its words (snake_case, camelCase, kebab-case, dotted) is one of
# these, or when it contains one of the word pairs. Whole words, not substrings: `max_tokens`,
# `tokenizer` and `reference_logps` are ordinary config keys.
_SECRET_WORDS = {"password", "passwd", "secret", "secrets", "credential", "credentials", "apikey",
                 "authorization"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key")}
# `token` is secret as a key's last word (hf_token, auth_token, wandb_token), except tokenizer special
# tokens, whose values are strings like "<pad>" and belong in the config.
_SPECIAL_TOKEN_WORDS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop"}


def _key_words(key: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", key)]


def looks_secret(key: str) -> bool:
    words = _key_words(key)
    if any(w in _SECRET_WORDS for w in words):
        return True
    if any(pair in _SECRET_PAIRS for pair in zip(words, words[1:])):
        return True
    return bool(words) and words[-1] == "token" and not (len(words) > 1 and words[-2] in _SPECIAL_TOKEN_WORDS)


def redact_secrets(d: Mapping) -> dict:
    """A copy of `d` without secret-looking keys, at any depth (dicts inside lists too). Pure.

    Secret-looking: a key with a word password / passwd / secret / credential(s) / authorization /
    apikey, a pair api key / access key / private key, or `token` as its last word (hf_token), except
    tokenizer special tokens (pad_token). Case-insensitive. Keys are dropped, not masked, so no
    fragment of a value survives.
    """
    return {key: _redact_value(value) for key, value in d.items() if not looks_secret(str(key))}


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return redact_secrets(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_overrides(args: list[str]) -> list[str]:
    """Command-line arguments with `key=value` overrides of secret-looking keys replaced by `key=<redacted>`."""
    out = []
    for arg in args:
        key, sep, _ = arg.partition("=")
        last = key.lstrip("+~").split(".")[-1]
        out.append(f"{key}=<redacted>" if sep and looks_secret(last) else arg)
    return out
