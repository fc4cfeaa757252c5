"""Naming a storage failure (full disk, read-only folder, lost database) apart from everything else.

A worker that lost its storage is worth restarting (the storage may come back); a worker whose
design crashed is not. :func:`storage_failure` decides by exception type, following the chain
of causes: Optuna, failing to record a trial's end, raises an error of its own while handling
the storage's.
"""

from __future__ import annotations

import errno

import optuna

from auxsearch.errors import StorageError

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def storage_failure(exc: BaseException | None) -> str | None:
    """One line naming a storage failure in ``exc`` or its causes, else None."""
    seen = 0
    while exc is not None and seen < 10:
        why = _one(exc)
        if why is not None:
            return why
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _one(exc: BaseException) -> str | None:
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        return f"cannot write the study's storage: {exc.strerror or exc}{where}"
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's own dependency

    if isinstance(exc, SQLAlchemyError | optuna.exceptions.StorageInternalError):
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the study's database failed: {first[0] if first else type(exc).__name__}"
    return None
