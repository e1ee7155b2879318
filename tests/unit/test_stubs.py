"""The committed stubs in fnas/v1/ are exactly what scripts/gen_protos.sh makes from protos/."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def generate(into: Path) -> dict[str, bytes]:
    """Runs the real generation script on a copy of protos/ + script; returns the stubs."""
    shutil.copytree(ROOT / "protos", into / "protos")
    shutil.copytree(ROOT / "scripts", into / "scripts")
    (into / "fnas" / "v1").mkdir(parents=True)
    subprocess.run(["bash", str(into / "scripts" / "gen_protos.sh")], check=True, capture_output=True)
    return {p.name: p.read_bytes() for p in sorted((into / "fnas" / "v1").iterdir()) if p.is_file()}


def test_stubs_match_protos(tmp_path):
    fresh = generate(tmp_path)
    committed = {p.name: p.read_bytes() for p in sorted((ROOT / "fnas" / "v1").iterdir()) if p.is_file()}
    assert fresh.keys() == committed.keys(), "stub files differ: run scripts/gen_protos.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stubs out of date with protos/ (run scripts/gen_protos.sh): {stale}"


def test_drift_is_detected(tmp_path):
    """A changed .proto yields different stubs, so the check above can fail."""
    fresh = generate(tmp_path / "a")
    shutil.copytree(ROOT / "protos", tmp_path / "b" / "protos")
    proto = tmp_path / "b" / "protos" / "fnas" / "v1" / "common.proto"
    proto.write_text(
        proto.read_text().replace("string space = 1;", "string space = 1;\n  string extra = 99;", 1)
    )
    shutil.copytree(ROOT / "scripts", tmp_path / "b" / "scripts")
    (tmp_path / "b" / "fnas" / "v1").mkdir(parents=True)
    subprocess.run(
        ["bash", str(tmp_path / "b" / "scripts" / "gen_protos.sh")], check=True, capture_output=True
    )
    assert (tmp_path / "b" / "fnas" / "v1" / "common_pb2.py").read_bytes() != fresh["common_pb2.py"]
