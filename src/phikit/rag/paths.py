"""Which files a ``phikit kb add`` takes: checks and recursive expansion of the paths a user names."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadRequestError
from .loaders import supported


def require_paths(paths: list[str | Path]) -> None:
    """Fail before anything is written when a path to add does not exist.

    Raises:
        BadRequestError: names the first missing path.
    """
    if not paths:
        raise BadRequestError("no files or folders to add")
    for p in paths:
        if not Path(p).expanduser().exists():
            raise BadRequestError(f"no such file or folder: {p}")


def expand_paths(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under ``paths`` (folders recursively, hidden entries skipped) with a supported suffix.

    Returns:
        ``(files, problems)`` where problems are ``(path, reason)`` for unsupported files (named or found
        in a folder) and missing paths.
    """
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if not f.is_file() or any(part.startswith(".") for part in rel):
                    continue
                (files.append(f) if supported(f) else problems.append((str(f), f"unsupported file type {f.suffix!r}")))
        elif p.is_file():
            (files.append(p) if supported(p) else problems.append((str(p), f"unsupported file type {p.suffix!r}")))
        else:
            problems.append((str(p), "no such file or folder"))
    seen, unique = set(), []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique, problems
