"""Regenerate the Python code for every .proto file under proto/ (the one way to do it).

Run `python scripts/gen_proto.py`; `python scripts/gen_proto.py --check` fails when the
checked-in code does not match the .proto files (CI runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = Path("broker/api/v1")


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    subprocess.run(cmd, check=True)
    for pkg in (out / "broker" / "api", out / OUT_PACKAGE):
        (pkg / "__init__.py").write_text('"""Generated protobuf and gRPC code (scripts/gen_proto.py)."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh, current = out / OUT_PACKAGE, ROOT / OUT_PACKAGE
        names = sorted(p.name for p in fresh.iterdir())
        if args.check:
            stale = [
                n for n in names if not (current / n).exists() or not filecmp.cmp(fresh / n, current / n, shallow=False)
            ]
            existing = sorted(p.name for p in current.iterdir() if p.is_file()) if current.exists() else []
            extra = [n for n in existing if n not in names]
            if stale or extra:
                print(f"generated code is stale: {stale + extra}; run python scripts/gen_proto.py", file=sys.stderr)
                return 1
            print("generated code matches proto/")
            return 0
        shutil.rmtree(current, ignore_errors=True)
        shutil.copytree(fresh, current)
        init = ROOT / "broker" / "api" / "__init__.py"
        shutil.copy(out / "broker" / "api" / "__init__.py", init)
    print(f"generated {len(names)} files into {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
