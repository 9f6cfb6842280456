#!/usr/bin/env python3
"""Regenerate tests/fixtures/curand/ from the real curand XORWOW.

Steps (see README.md next to this file):

1. ``pip download nvidia-curand-cu12==<pinned> --no-deps`` and unzip its
   ``nvidia/curand/include`` headers (cached in ``--work``);
2. ``nvcc`` builds ``generate.cu`` into a host program (no GPU needed);
3. the program writes one JSON fixture per (profile, seed), plus
   ``xorwow_raw.json`` with raw ``curand()`` outputs; ``MANIFEST.json``
   records the tool versions and file hashes.

Standard library only. Seeds are turned into ``s64`` here, independently of
``nnopt`` (64 hex digits = raw bytes, anything else = SHA-256 of its UTF-8
text; first 8 bytes little-endian), so the fixtures also check nnopt's seed
handling.

    python tools/curand_reference/make_fixtures.py [--work /tmp/curand_reference]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_VERSION = "10.3.10.19"
WHEEL = f"nvidia-curand-cu12=={WHEEL_VERSION}"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = REPO / "tests" / "fixtures" / "curand"

# Profiles as TIG's generator / nnopt.data define them.
PROFILES = {
    "tig": "inputs=1 outputs=2 freq_power=2",
    "spec": "inputs=8 outputs=1 freq_power=1",
}
COMMON = (
    "features=128 lengthscale=0.3 noise=0.2 amplitude=1 train=1000 val=200 test=250"
)
SUBSET = "head=20 stride=5"  # stored samples: first 20, every 5th, split edges

# label -> seed string, as a user would pass it to nnopt.
SEEDS = {
    "hex-zero": "0" * 64,
    "hex-random": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
    # s64 = 2**64 - 100: parameter and sample seeds s64 + i wrap past 2**64.
    "hex-wrap": "9cffffffffffffff" + "00112233445566778899aabbccddeeff0011223344556677",
    "text-0": "0",
    "text-1": "1",
    "text-tig-fixture": "tig-fixture",
}

RAW_SEEDS = [0, 1, 2**64 - 1, 0x0123456789ABCDEF, 2**32, 2**32 - 1]


def seed_u64(text: str) -> int:
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raw = bytes.fromhex(text)
    else:
        raw = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(raw[:8], "little")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(cmd: list[str], **kw) -> str:
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def fetch_headers(work: Path) -> tuple[Path, Path]:
    whl_dir = work / "wheel"
    pattern = str(whl_dir / f"nvidia_curand_cu12-{WHEEL_VERSION}-*.whl")
    wheels = sorted(glob.glob(pattern))
    if not wheels:
        pip = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps"]
        run([*pip, "-d", str(whl_dir)])
        wheels = sorted(glob.glob(pattern))
    wheel = Path(wheels[-1])
    inc_root = work / "headers"
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("nvidia/curand/include/") and name.endswith(".h"):
                z.extract(name, inc_root)
    return wheel, inc_root / "nvidia" / "curand" / "include"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/curand_reference"))
    ap.add_argument("--nvcc", default=os.environ.get("NVCC", "nvcc"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    wheel, include = fetch_headers(args.work)
    exe = args.work / "generate"
    cu = HERE / "generate.cu"
    # The suppressions only silence curand's own double4 deprecation warnings.
    flags = "-O2 -diag-suppress 1444 -Xcompiler -Wno-deprecated-declarations"
    run([args.nvcc, *flags.split(), "-I", str(include), "-o", str(exe), str(cu)])

    OUT.mkdir(parents=True, exist_ok=True)
    files = {}

    def write(name: str, text: str) -> None:
        json.loads(text)  # must be valid JSON
        (OUT / name).write_text(text)
        files[name] = hashlib.sha256(text.encode()).hexdigest()

    raw_seeds = "seeds=" + ",".join(map(str, RAW_SEEDS))
    write("xorwow_raw.json", run([str(exe), "raw", raw_seeds, "count=8"]))
    for profile, shape in PROFILES.items():
        for label, text in SEEDS.items():
            cmd = [str(exe), "data", f"s64={seed_u64(text)}", f"seed={text}"]
            cmd += [f"profile={profile}", *f"{shape} {COMMON} {SUBSET}".split()]
            write(f"data_{profile}_{label}.json", run(cmd))

    nvcc_version = run([args.nvcc, "--version"]).strip().splitlines()[-2:]
    gcc_version = run(["gcc", "--version"]).splitlines()[0]
    manifest = {
        "made_by": "tools/curand_reference/make_fixtures.py",
        "wheel": wheel.name,
        "wheel_sha256": sha256(wheel),
        "curand_kernel_h_sha256": sha256(include / "curand_kernel.h"),
        "generate_cu_sha256": sha256(cu),
        "nvcc_flags": flags,
        "nvcc": nvcc_version,
        "host_compiler": gcc_version,
        "files": files,
    }
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum((OUT / n).stat().st_size for n in files)
    print(f"wrote {len(files)} fixtures ({total / 1024:.0f} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
