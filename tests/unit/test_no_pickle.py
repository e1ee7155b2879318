"""Nothing that crosses a process or comes from a user is unpickled (DESIGN.md, Storage).

A static check of the source: pickle appears only where the NAS-Bench-Graph package's own table file is
read with a numbers-only unpickler; no multiprocessing (it pickles what it sends), no torch.load without
weights_only, no numpy loads that allow pickles.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The one reader of a pickle: the installed package's own file, with an unpickler that refuses classes.
ALLOWED = {"fnas/spaces/nasbench_graph.py"}
FORBIDDEN = {
    "pickle": re.compile(r"^\s*(import pickle|from pickle import)|cPickle|dill|cloudpickle", re.M),
    "multiprocessing": re.compile(r"^\s*(import |from )multiprocessing|ProcessPoolExecutor", re.M),
    # safetensors.torch.load is fine; torch.load only with weights_only=True.
    "torch.load": re.compile(r"(?<![\w.])torch\.load\((?![^)]*weights_only=True)"),
    "allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
}


def test_no_pickle_crosses_a_process():
    sources = [p for d in ("fnas", "services") for p in (ROOT / d).rglob("*.py") if "/v1/" not in str(p)]
    assert len(sources) > 50
    found = []
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        for what, pattern in FORBIDDEN.items():
            if pattern.search(text) and not (what == "pickle" and rel in ALLOWED):
                found.append(f"{rel}: {what}")
    assert found == []
