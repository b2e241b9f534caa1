#!/usr/bin/env python3
"""Writes link/symbol-order.txt: the functions of the pydeployer executable that its start-up,
a plan and a run execute, sorted by name. build.rs hands the file to lld
(`--symbol-ordering-file`), which lays those functions out first and together.

Why: the kernel maps an executable's code 64 KB at a time around each page it touches, and the
functions one `pydeployer run` executes are about 1.3 MB spread over 7 MB of code. Scattered,
they left about 5 MB of it resident (plan-2000: 10.7 MB peak RSS); together, 1.4 MB (7.9 MB).
BENCHMARKS.md has the measurements.

The names are mangled symbols with hashes that depend on the Rust version and the crates' versions,
not on the code inside a function: the file stays useful while the code changes, loses a
function when one is renamed or added, and is ignored as a whole (lld is told not to warn)
by another Rust version. Run this again after a Rust upgrade or a large change:

    python3 link/order.py            # needs valgrind (apt-get install valgrind)

It builds the release executable without the current order (PYDEPLOYER_NO_ORDER=1, in its own
target folder), runs it under callgrind on a few generated projects (no network), and keeps every
function of the executable that ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "link" / "symbol-order.txt"
TARGET = ROOT / "target" / "order"


def pipeline_files(work: Path) -> dict[str, tuple[Path, list[str]]]:
    """Small projects covering the common paths: start-up, a run of one stage, a parallel run
    with output, a failing stage, a plan of a layered graph. Each with the arguments to run."""
    cases: dict[str, tuple[Path, list[str]]] = {}

    def project(name: str, text: str, args: list[str]) -> None:
        folder = work / name
        folder.mkdir()
        (folder / "pipeline.yml").write_text(text)
        cases[name] = (folder, args)

    project("noop", "stages:\n  s0:\n    run: /bin/true\n", ["run", "-j", "2", "-f", "pipeline.yml"])
    fan = "".join(f"  s{i}:\n    run: echo out {i}\n    timeout: 1m\n" for i in range(200))
    fan += "  final:\n    run: /bin/true\n    needs: [" + ", ".join(f"s{i}" for i in range(200)) + "]\n"
    project("fanout", f"jobs: 2\nstages:\n{fan}", ["run"])
    project("named", f"stages:\n{fan}", ["run", "-j", "2", "-f", "pipeline.yml", "final"])
    project("failing", "env: { A: '1' }\nstages:\n  a: { run: 'echo no; exit 3', retries: 1 }\n"
            "  b: { run: /bin/true, needs: [a] }\n", ["run"])
    # A layered graph as large as the benchmark's plan-2000.
    layers = []
    for layer in range(40):
        for i in range(50):
            needs = "" if layer == 0 else f", needs: [l{layer-1}s{i}, l{layer-1}s{(i + 7) % 50}]"
            layers.append(f"  l{layer}s{i}: {{ run: /bin/true{needs} }}\n")
    layers.append("  final: { run: /bin/true, needs: [" + ", ".join(f"l39s{i}" for i in range(50)) + "] }\n")
    project("plan", "stages:\n" + "".join(layers), ["plan", "-j", "2", "-f", "pipeline.yml", "final"])
    return cases


def main() -> int:
    if shutil.which("valgrind") is None:
        sys.exit("order.py: valgrind is needed (apt-get install valgrind)")
    env = dict(os.environ, PYDEPLOYER_NO_ORDER="1", CARGO_TARGET_DIR=str(TARGET))
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, env=env, check=True)
    exe = TARGET / "release" / "pydeployer"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [(work, ["--version"]), (work, ["--help"])]
        runs += list(pipeline_files(work).values())
        outs = work / "callgrind"
        outs.mkdir()
        # Twice each: the second run finds the first one's log (and its retention).
        for n, (folder, args) in enumerate(runs + runs):
            # %p: the forked watchdog writes its own file (its code counts too).
            out = outs / f"{n:02}.%p.out"
            subprocess.run(["valgrind", "--tool=callgrind", "--compress-strings=no", "--demangle=no",
                            f"--callgrind-out-file={out}", str(exe), *args],
                           cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seen: dict[str, None] = {}
        for file in sorted(outs.iterdir()):
            seen.update(dict.fromkeys(functions_of(file, str(exe))))
    defined = code_symbols(exe)
    # Sorted: the mangled names group a module's functions, and the file changes by as many lines
    # as functions came or went (callgrind's own order moves with addresses).
    order = sorted(name for name in seen if name in defined)
    OUT.write_text("".join(f"{name}\n" for name in order))
    size = sum(defined[name] for name in order)
    print(f"order.py: {len(order)} functions, {size / 1e6:.2f} MB, written to {OUT.relative_to(ROOT)}")
    return 0


def functions_of(file: Path, exe: str) -> list[str]:
    """The functions of `exe` a callgrind profile shows (run or called), in file order."""
    names: list[str] = []
    obj = called_obj = None
    with file.open() as profile:
        for line in profile:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("cob="):
                called_obj = line[4:].strip()
            elif line.startswith("fn="):
                if obj == exe:
                    names.append(line[3:].strip())
            elif line.startswith("cfn="):
                if (called_obj or obj) == exe:
                    names.append(line[4:].strip())
                called_obj = None
    return names


def code_symbols(exe: Path) -> dict[str, int]:
    """The executable's functions (`nm`: text symbols) and their sizes."""
    listing = subprocess.run(["nm", "-S", "--defined-only", str(exe)], capture_output=True, text=True,
                             check=True).stdout
    sizes: dict[str, int] = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in ("t", "T"):
            sizes[fields[3]] = int(fields[1], 16)
    return sizes


if __name__ == "__main__":
    sys.exit(main())
