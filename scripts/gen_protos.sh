#!/usr/bin/env bash
# Regenerates the Python stubs in fnas/v1/ from protos/fnas/v1/*.proto.
# The folder mirrors the package, so the stubs import as `from fnas.v1 import x_pb2`.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f fnas/v1/*_pb2*.py fnas/v1/*_pb2*.pyi
python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/fnas/v1/*.proto
touch fnas/v1/__init__.py
# protoc drops comments, so a comment-only proto change leaves the stubs as they were; the hashes of
# the sources record which protos these stubs were made from (tests/unit/test_stubs.py checks them too).
# Python's hashlib rather than sha256sum, which macOS lacks; the lines read as `sha256sum -c` expects.
(cd protos && python -c 'import hashlib, sys
for p in sys.argv[1:]:
    print(hashlib.sha256(open(p, "rb").read()).hexdigest() + "  " + p)' fnas/v1/*.proto) > fnas/v1/PROTOS.sha256
