"""Storage errors that say what to do (fmolab.storage)."""
from __future__ import annotations

import os


class StorageError(ValueError):
    """A URI cannot be reached, read or written; the message names it and what to set (bad input:
    the commands exit with status 2)."""


def explain(path: str, exc: Exception, writing: bool = False) -> StorageError:
    """Turn a filesystem error into one line that says what to do."""
    text = str(exc)
    low = text.lower()
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS's default"
    if "nosuchbucket" in low.replace("_", "") or "bucket does not exist" in low:
        hint = "the bucket does not exist: create it, or fix the URI"
    elif "access denied" in low or "accessdenied" in low or "forbidden" in low or "403" in low:
        hint = ("access denied" + (": the bucket is read-only for these credentials" if writing else "")
                + "; check AWS_ACCESS_KEY_ID / AWS_PROFILE and the bucket's policy")
    elif any(s in low for s in ("curl", "connect", "resolve", "timed out", "timeout", "network")):
        hint = f"the endpoint ({endpoint}) cannot be reached; set AWS_ENDPOINT_URL to the S3 server"
    elif "credential" in low or "invalidaccesskeyid" in low or "signature" in low:
        hint = "the credentials are refused; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    else:
        hint = text.splitlines()[0][:300] if text else type(exc).__name__
    return StorageError(f"{'cannot write to' if writing else 'cannot read'} {path}: {hint}")
