"""The committed stubs in fnas/v1/ are exactly what scripts/gen_protos.sh makes from protos/."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def generate_edited(into: Path, edit) -> dict[str, bytes]:
    """The stubs of protos/ with common.proto's text passed through `edit`."""
    shutil.copytree(ROOT / "protos", into / "protos")
    proto = into / "protos" / "fnas" / "v1" / "common.proto"
    proto.write_text(edit(proto.read_text()))
    shutil.copytree(ROOT / "scripts", into / "scripts")
    (into / "fnas" / "v1").mkdir(parents=True)
    subprocess.run(["bash", str(into / "scripts" / "gen_protos.sh")], check=True, capture_output=True)
    return {p.name: p.read_bytes() for p in sorted((into / "fnas" / "v1").iterdir()) if p.is_file()}


def generate(into: Path) -> dict[str, bytes]:
    """Runs the real generation script on a copy of protos/ + script; returns the stubs."""
    return generate_edited(into, lambda text: text)


def test_stubs_match_protos(tmp_path):
    fresh = generate(tmp_path)
    committed = {p.name: p.read_bytes() for p in sorted((ROOT / "fnas" / "v1").iterdir()) if p.is_file()}
    assert fresh.keys() == committed.keys(), "stub files differ: run scripts/gen_protos.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stubs out of date with protos/ (run scripts/gen_protos.sh): {stale}"


def test_drift_is_detected(tmp_path):
    """A changed .proto yields different stubs, so the check above can fail."""
    fresh = generate(tmp_path / "a")
    changed = generate_edited(
        tmp_path / "b",
        lambda text: text.replace("string space = 1;", "string space = 1;\n  string extra = 99;", 1),
    )
    assert changed["common_pb2.py"] != fresh["common_pb2.py"]


def test_a_comment_only_change_is_detected(tmp_path):
    """protoc drops comments, so only the recorded source hashes tell such stubs apart."""
    fresh = generate(tmp_path / "a")
    changed = generate_edited(tmp_path / "b", lambda text: text + "\n// a comment\n")
    assert changed["common_pb2.py"] == fresh["common_pb2.py"]
    assert changed["PROTOS.sha256"] != fresh["PROTOS.sha256"]
