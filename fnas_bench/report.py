"""What every `fnas bench` command does with its result: print the table, write OUT.json and OUT.png."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path


def emit(result: dict, text: str, out: Path, plot: Callable[[dict, Path], None]) -> None:
    """Prints `text`, then writes `result` as OUT.json and `plot(result, OUT.png)`."""
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, png_path)
    print(f"wrote {json_path} and {png_path}", file=sys.stderr)
