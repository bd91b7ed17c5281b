"""The sample sheet ``levere deliver --metadata`` keeps with a delivery: found, read, checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from levere.domain.errors import ValidationFailed

MAX_METADATA_BYTES = 1024 * 1024


def metadata_path(given: Path, run_folder: Path) -> Path:
    """The sample sheet ``--metadata`` names: as given, or, for a relative path not found from the
    current folder, inside the run folder (where sample sheets live)."""
    if given.is_absolute() or given.exists():
        return given
    inside = run_folder / given
    return inside if inside.exists() else given


def read_metadata(path: Path) -> dict[str, Any]:
    """A sample sheet to keep with the delivery: a JSON object as is, any other text by name."""
    try:
        size = path.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise ValidationFailed({"metadata": f"{path} is larger than {MAX_METADATA_BYTES} bytes"})
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValidationFailed({"metadata": f"cannot read {path}: {exc.strerror}"}) from None
    except UnicodeDecodeError:
        raise ValidationFailed({"metadata": f"{path} is not UTF-8 text"}) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationFailed({"metadata": f"{path} is not valid JSON: {exc}"}) from None
        if not isinstance(data, dict):
            raise ValidationFailed({"metadata": f"{path} must hold a JSON object"})
        return data
    return {"sample_sheet": {"file": path.name, "text": text}}
