#!/usr/bin/env python3
"""Run goro's benchmark suite against Go, Boost.Context and threads.

Every measurement is a separate process: one program of bench/goro,
bench/go, bench/boost or bench/threads, built by `make bench` into
build/bench/. A round runs each group of jobs with the peers alternating
(goro, Go, Boost, threads, ...), and later rounds repeat the whole suite,
with the job order of each group reversed in every other round. So the
peers of one comparison always run minutes apart at most, and a drift of
the machine's speed hits all of them. For each number the report gives
the median over rounds, the min-max, and the ratio goro/peer computed
inside each round (median, min-max over rounds).

Usage: python3 bench/run.py [--rounds N] [--only GROUP[,GROUP...]]
                            [--results FILE] [--no-plots]

Groups: spawn, rss, pingpong, growth, thrash, alloc. A full run writes
docs/benchmarks-results.md, the plots in docs/img/ and the summary table
in docs/benchmarks.md; a run with --only
writes its results beside the raw output of its jobs, under
bench/results/raw/, and makes no plots.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bench")
RAW = os.path.join(ROOT, "bench", "results", "raw")
IMG = os.path.join(ROOT, "docs", "img")
PLOT_DATA = os.path.join(ROOT, "build", "bench", "plot")
JOB_TIMEOUT_S = 600
# Groups that run in the first round only. The memory of N parked
# goroutines repeats to the byte from run to run, and these jobs (up to a
# million goroutines each) take a large share of the suite's time.
ONCE_GROUPS = {"rss"}


class Job:
    """One program run: its output lines "result KEY VALUE" become values."""

    def __init__(self, name, group, argv, env=None):
        self.name = name
        self.group = group
        self.argv = argv
        self.env = env or {}


def goro(prog, *args, env=None):
    return [os.path.join(BIN, "goro", prog)] + [str(a) for a in args], env


def gobin(prog, *args, env=None):
    return [os.path.join(BIN, "go", prog)] + [str(a) for a in args], env


def boost(prog, *args):
    return [os.path.join(BIN, "boost", prog)] + [str(a) for a in args], None


def threads(prog, *args):
    return [os.path.join(BIN, "threads", prog)] + [str(a) for a in args], None


def build_jobs():
    """Returns the jobs of every group, in the order a round runs them."""
    spec = {
        "spawn": [
            ("goro_spawn_100k", goro("spawn", "-n", 100000, "-warm", 1)),
            ("go_spawn_100k", gobin("spawn", "-n", 100000, "-warm", 1)),
            ("boost_spawn_100k", boost("spawn", "-n", 100000, "-warm", 1)),
            ("threads_spawn_10k", threads("spawn", "-n", 10000, "-warm", 1)),
            ("threads64k_spawn_10k", threads("spawn", "-n", 10000, "-stack", 65536, "-warm", 1)),
        ],
        "rss": [
            ("goro_rss_10k", goro("spawn", "-n", 10000, "-teardown", 0)),
            ("go_rss_10k", gobin("spawn", "-n", 10000, "-teardown", 0)),
            ("goro_rss_300k", goro("spawn", "-n", 300000, "-teardown", 0)),
            ("go_rss_300k", gobin("spawn", "-n", 300000, "-teardown", 0)),
            ("goro_rss_1m", goro("spawn", "-n", 1000000, "-teardown", 0)),
            ("go_rss_1m", gobin("spawn", "-n", 1000000, "-teardown", 0)),
            ("boost_rss_1m", boost("spawn", "-n", 1000000, "-teardown", 0)),
        ],
        "pingpong": [
            ("goro_pingpong_1", goro("pingpong", "-procs", 1, "-n", 1000000)),
            ("go_pingpong_1", gobin("pingpong", "-n", 1000000, env={"GOMAXPROCS": "1"})),
            ("boost_switch", boost("switch", "-n", 10000000)),
            ("threads_pingpong_1", threads("pingpong", "-cpus", 1, "-n", 20000)),
            ("goro_pingpong_2", goro("pingpong", "-procs", 2, "-n", 1000000)),
            ("go_pingpong_2", gobin("pingpong", "-n", 1000000, env={"GOMAXPROCS": "2"})),
            ("threads_pingpong_2", threads("pingpong", "-cpus", 0, "-n", 20000)),
            ("goro_yield_1", goro("pingpong", "-procs", 1, "-mode", "yield", "-n", 2000000)),
        ],
        "growth": [
            ("goro_growth", goro("growth", "-reps", 5)),
            ("go_growth", gobin("growth", "-reps", 5, env={"GOMAXPROCS": "1"})),
            ("threads_growth", threads("growth", "-reps", 5)),
        ],
        "thrash": [
            ("goro_thrash_off", goro("thrash", "-policy", "off")),
            ("go_thrash_off", gobin("thrash", env={"GOMAXPROCS": "1",
                                                   "GODEBUG": "gcshrinkstackoff=1"})),
            ("goro_thrash_gorule", goro("thrash", "-policy", "go")),
            ("go_thrash_on", gobin("thrash", env={"GOMAXPROCS": "1"})),
            ("goro_thrash_default", goro("thrash", "-policy", "default")),
        ],
        "alloc": [
            ("goro_alloc", goro("alloc", "-n", 2000000, "-reps", 3, "-fresh", 2000)),
            ("go_alloc", gobin("alloc", "-n", 2000000, "-reps", 3, "-fresh", 2000,
                               env={"GOMAXPROCS": "1"})),
        ],
    }
    groups = {}
    for group, jobs in spec.items():
        groups[group] = [Job(name, group, argv, env) for name, (argv, env) in jobs]
    return groups


# A measurement row is (peer label, job, key). The first row of a
# measurement is goro's, or C's for the heap rows. Every other row gets the
# ratio first / this, computed per round.
def measurements():
    m = []

    def add(group, title, unit, rows, ratios=True):
        m.append({"group": group, "title": title, "unit": unit, "rows": rows, "ratios": ratios})

    thr = "threads, 8 MiB stacks, N=10k"
    thr64 = "threads, 64 KiB stacks, N=10k"
    add("spawn", "spawn until parked, cold (fresh process), N=100k", "ns per goroutine", [
        ("goro", "goro_spawn_100k", "cold_ns"),
        ("Go", "go_spawn_100k", "cold_ns"),
        ("Boost fiber", "boost_spawn_100k", "cold_ns"),
        (thr, "threads_spawn_10k", "cold_ns"),
        (thr64, "threads64k_spawn_10k", "cold_ns"),
    ])
    add("spawn", "spawn until parked, warm (second round in the same process), N=100k",
        "ns per goroutine", [
            ("goro", "goro_spawn_100k", "warm_ns"),
            ("Go", "go_spawn_100k", "warm_ns"),
            ("Boost fiber", "boost_spawn_100k", "warm_ns"),
            (thr, "threads_spawn_10k", "warm_ns"),
            (thr64, "threads64k_spawn_10k", "warm_ns"),
        ])
    add("spawn", "teardown (release until all have run to the end), cold round, N=100k",
        "ns per goroutine", [
            ("goro", "goro_spawn_100k", "cold_teardown_ns"),
            ("Go", "go_spawn_100k", "cold_teardown_ns"),
            ("Boost fiber", "boost_spawn_100k", "cold_teardown_ns"),
            (thr, "threads_spawn_10k", "cold_teardown_ns"),
            (thr64, "threads64k_spawn_10k", "cold_teardown_ns"),
        ])
    add("rss", "spawn until parked, cold (fresh process), N=1M", "ns per goroutine", [
        ("goro", "goro_rss_1m", "cold_ns"),
        ("Go", "go_rss_1m", "cold_ns"),
        ("Boost fiber", "boost_rss_1m", "cold_ns"),
    ])
    for n_label, goro_job, go_job, boost_job, with_threads in [
            ("100k", "goro_spawn_100k", "go_spawn_100k", "boost_spawn_100k", True),
            ("1M", "goro_rss_1m", "go_rss_1m", "boost_rss_1m", False)]:
        for key, what in [("cold_rss", "VmRSS"), ("cold_rsspte", "VmRSS + VmPTE")]:
            rows = [("goro", goro_job, key), ("Go", go_job, key), ("Boost fiber", boost_job, key)]
            if with_threads:
                rows += [(thr, "threads_spawn_10k", key), (thr64, "threads64k_spawn_10k", key)]
            add("rss", f"{what} per parked goroutine, N={n_label}", "bytes", rows)
    add("rss", "stack bytes the runtime counts per parked goroutine, N=1M "
        "(goro stack_inuse, Go MemStats.StackInuse)", "bytes", [
            ("goro", "goro_rss_1m", "cold_stack_inuse"),
            ("Go", "go_rss_1m", "cold_stack_inuse"),
        ])

    add("pingpong", "ping-pong round trip over two unbuffered channels, 1 worker thread",
        "ns per round trip", [
            ("goro, GOROMAXPROCS=1", "goro_pingpong_1", "roundtrip_ns"),
            ("Go, GOMAXPROCS=1", "go_pingpong_1", "roundtrip_ns"),
            ("Boost fiber resume/yield", "boost_switch", "roundtrip_ns"),
            ("threads, mutex+condvar, 1 CPU", "threads_pingpong_1", "roundtrip_ns"),
        ])
    add("pingpong", "ping-pong round trip over two unbuffered channels, 2 worker threads",
        "ns per round trip", [
            ("goro, GOROMAXPROCS=2", "goro_pingpong_2", "roundtrip_ns"),
            ("Go, GOMAXPROCS=2", "go_pingpong_2", "roundtrip_ns"),
            ("threads, mutex+condvar, 2 CPUs", "threads_pingpong_2", "roundtrip_ns"),
        ])
    add("pingpong", "switch round trip without a channel: goro_yield between two goroutines "
        "on 1 worker, Boost resume/yield", "ns per round trip", [
            ("goro_yield", "goro_yield_1", "roundtrip_ns"),
            ("Boost fiber resume/yield", "boost_switch", "roundtrip_ns"),
        ])

    for mode, mode_text in [("cold", "cold: first call on fresh stack memory"),
                            ("warm", "warm: stack memory already resident")]:
        for size, size_text in [("8k", "8 KiB"), ("64k", "64 KiB"), ("1m", "1 MiB"),
                                ("16m", "16 MiB")]:
            # Warm costs near zero are noise, so their ratios are left out.
            add("growth", f"stack growth to {size_text}, {mode_text} (first call - second call)",
                "us", [
                    ("goro", "goro_growth", f"{mode}_{size}_us"),
                    ("Go", "go_growth", f"{mode}_{size}_us"),
                    ("threads", "threads_growth", f"{mode}_{size}_us"),
                ], ratios=mode == "cold")

    for stat, text in [("deep_p50_us", "deep-task p50"), ("deep_p99_us", "deep-task p99")]:
        add("thrash", f"thrash {text}, shrinking off", "us", [
            ("goro, shrink off", "goro_thrash_off", stat),
            ("Go, GODEBUG=gcshrinkstackoff=1", "go_thrash_off", stat),
        ])
        add("thrash", f"thrash {text}, Go's shrink rule", "us", [
            ("goro, hysteresis 0 (Go's rule)", "goro_thrash_gorule", stat),
            ("Go, default", "go_thrash_on", stat),
        ])
        add("thrash", f"thrash {text}, each runtime's default", "us", [
            ("goro, default policy", "goro_thrash_default", stat),
            ("Go, default", "go_thrash_on", stat),
        ])
    add("thrash", "thrash: share of deep tasks that grew the stack", "share", [
        ("goro, shrink off", "goro_thrash_off", "deep_grew_share"),
        ("goro, hysteresis 0 (Go's rule)", "goro_thrash_gorule", "deep_grew_share"),
        ("goro, default policy", "goro_thrash_default", "deep_grew_share"),
        ("Go, GODEBUG=gcshrinkstackoff=1", "go_thrash_off", "deep_grew_share"),
        ("Go, default", "go_thrash_on", "deep_grew_share"),
    ])
    add("thrash", "thrash: VmRSS growth after 20 idle cycles", "KiB", [
        ("goro, shrink off", "goro_thrash_off", "rss_idle_kib"),
        ("goro, hysteresis 0 (Go's rule)", "goro_thrash_gorule", "rss_idle_kib"),
        ("goro, default policy", "goro_thrash_default", "rss_idle_kib"),
        ("Go, GODEBUG=gcshrinkstackoff=1", "go_thrash_off", "rss_idle_kib"),
        ("Go, default", "go_thrash_on", "rss_idle_kib"),
    ])

    alloc_rows = [
        ("local 64 B buffer, pages committed (no growth)", "stack64_ns", "stack64_ns"),
        ("local 4 KiB buffer, pages committed (no growth)", "stack4k_ns", "stack4k_ns"),
        ("local 4 KiB buffer, first call on a new goroutine, fresh stack memory",
         "grow4k_fresh_ns", "grow4k_fresh_ns"),
        ("local 4 KiB buffer, first call on a new goroutine, recycled stack",
         "grow4k_recycled_ns", "grow4k_recycled_ns"),
    ]
    for title, ckey, gokey in alloc_rows:
        add("alloc", f"stack: {title}", "ns", [
            ("C on goro", "goro_alloc", ckey),
            ("Go", "go_alloc", gokey),
        ])
    for size in ["64", "4k"]:
        label = "64 B" if size == "64" else "4 KiB"
        add("alloc", f"heap: allocate and free {label}", "ns", [
            ("C, glibc malloc+free", "goro_alloc", f"malloc{size}_ns"),
            ("C, mimalloc", "goro_alloc", f"mimalloc{size}_ns"),
            ("Go, make (GC amortized)", "go_alloc", f"heap{size}_ns"),
        ])
        add("alloc", f"pool: get and put a {label} object", "ns", [
            ("goro_pool", "goro_alloc", f"pool{size}_ns"),
            ("Go sync.Pool", "go_alloc", f"sync_pool{size}_ns"),
        ])
    return m


# ---- Running -------------------------------------------------------------

def run_job(job, round_no, log_dir):
    """Runs one job; returns ({key: value}, error text or None, seconds)."""
    env = dict(os.environ)
    for var in ("GOMAXPROCS", "GOROMAXPROCS", "GODEBUG", "GORODEBUG", "GOGC"):
        env.pop(var, None)
    env.update(job.env)
    env.update({"GOPROXY": "off", "GOFLAGS": "-mod=mod"})
    t0 = time.monotonic()
    try:
        p = subprocess.run(job.argv, env=env, capture_output=True, text=True,
                           timeout=JOB_TIMEOUT_S)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = e.stdout or "", (e.stderr or "") + "\ntimed out", -1
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    except OSError as e:
        out, err, rc = "", str(e), -1
    seconds = time.monotonic() - t0

    with open(os.path.join(log_dir, f"round{round_no}-{job.name}.txt"), "w") as f:
        envtext = " ".join(f"{k}={v}" for k, v in job.env.items())
        f.write(f"$ {envtext + ' ' if envtext else ''}{' '.join(job.argv)}\n")
        f.write(f"# exit status {rc}, {seconds:.2f} s\n")
        f.write(out)
        if err:
            f.write("# stderr:\n" + err)

    values = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "result":
            values[parts[1]] = float(parts[2])
    error = None
    if rc != 0:
        tail = " | ".join(err.strip().splitlines()[-3:])
        error = f"exit status {rc}: {tail}"
    return values, error, seconds


def run_suite(groups, selected, rounds, log_dir):
    """Returns results[job][round] = values and the errors seen."""
    results, errors = {}, []
    for r in range(rounds):
        for group in selected:
            if r > 0 and group in ONCE_GROUPS:
                continue
            jobs = groups[group] if r % 2 == 0 else list(reversed(groups[group]))
            for job in jobs:
                values, error, seconds = run_job(job, r + 1, log_dir)
                results.setdefault(job.name, {})[r] = values
                status = "ok" if error is None else "FAILED: " + error
                print(f"  round {r + 1}/{rounds}  {job.name:<24} {seconds:6.1f} s  {status}",
                      flush=True)
                if error:
                    errors.append(f"round {r + 1}, {job.name}: {error}")
    return results, errors


# ---- Statistics ----------------------------------------------------------

def series(results, job, key, rounds):
    """Values of one key per round (None where the round lacks it)."""
    per_round = results.get(job, {})
    return [per_round.get(r, {}).get(key) for r in range(rounds)]


def summarize(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs)


def fmt(x):
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_ratio(x):
    if x is None:
        return "n/a"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def evaluate(meas, results, rounds):
    """Adds per-row statistics and ratios to each measurement."""
    for m in meas:
        first = None
        for i, (label, job, key) in enumerate(m["rows"]):
            xs = series(results, job, key, rounds)
            row = {"label": label, "job": job, "key": key, "values": xs, "stats": summarize(xs)}
            if i == 0:
                first = xs
            elif m["ratios"]:
                # A ratio of a difference near zero (warm growth) means
                # nothing, so only positive pairs get one.
                ratios = [a / b if a is not None and b is not None and a > 0 and b > 0 else None
                          for a, b in zip(first, xs)]
                row["ratio"] = summarize(ratios)
            m.setdefault("out", []).append(row)


# ---- Output --------------------------------------------------------------

GROUP_TITLES = {
    "spawn": "Spawn until parked",
    "rss": "Memory per parked goroutine",
    "pingpong": "Ping-pong and switch",
    "growth": "Stack growth",
    "thrash": "Thrash: deep and shallow tasks with a shrink cycle between tasks",
    "alloc": "Stack, heap and pool allocation",
}


GROUP_NOTES = {
    "spawn": "Threads run at N=10k, because this VM cannot hold 100k threads.",
    "rss": "This group runs in the first round only, because its memory numbers "
           "repeat to the byte; its spawn time at N=1M therefore has one sample.",
    "growth": "goro and Go run with one worker thread; growth cost is the first "
              "call's time minus the second's.",
    "thrash": "One worker thread on both sides; 100 deep tasks per run.",
    "alloc": "One worker thread on both sides.",
}


def print_terminal(meas, selected):
    for group in selected:
        print(f"\n== {GROUP_TITLES[group]}")
        for m in (m for m in meas if m["group"] == group):
            print(f"\n{m['title']} [{m['unit']}]")
            for row in m["out"]:
                s = row["stats"]
                med = fmt(s[0]) if s else "n/a"
                rng = f"{fmt(s[1])} .. {fmt(s[2])}" if s else ""
                ratio = ""
                if "ratio" in row:
                    rr = row["ratio"]
                    ratio = "  first/this n/a"
                    if rr:
                        ratio = (f"  first/this {fmt_ratio(rr[0])} "
                                 f"({fmt_ratio(rr[1])}-{fmt_ratio(rr[2])})")
                print(f"  {row['label']:<40} {med:>10}  ({rng}){ratio}")


def markdown_tables(meas, group):
    lines = []
    for m in (m for m in meas if m["group"] == group):
        lines.append(f"**{m['title']}** ({m['unit']})")
        lines.append("")
        lines.append("| peer | median | min–max | first ÷ this (min–max) | per round |")
        lines.append("|---|---|---|---|---|")
        for row in m["out"]:
            s = row["stats"]
            med = fmt(s[0]) if s else "n/a"
            rng = f"{fmt(s[1])}–{fmt(s[2])}" if s else "n/a"
            if "ratio" in row:
                rr = row["ratio"]
                ratio = "n/a"
                if rr:
                    ratio = f"{fmt_ratio(rr[0])} ({fmt_ratio(rr[1])}–{fmt_ratio(rr[2])})"
            else:
                ratio = "—"
            per_round = " / ".join(fmt(x) for x in row["values"] if x is not None)
            lines.append(f"| {row['label']} | {med} | {rng} | {ratio} | {per_round} |")
        lines.append("")
    return lines


def story_table(meas):
    """Returns the stack, heap and pool table in one piece (medians, ns)."""
    by_title = {m["title"]: m for m in meas if m["group"] == "alloc"}
    lines = ["| operation | C / goro, ns | Go, ns |", "|---|---|---|"]
    for m in by_title.values():
        out = m["out"]
        c_cells = [f"{fmt(r['stats'][0]) if r['stats'] else 'n/a'} ({r['label']})"
                   for r in out if not r["label"].startswith("Go")]
        go_cells = [f"{fmt(r['stats'][0]) if r['stats'] else 'n/a'}"
                    for r in out if r["label"].startswith("Go")]
        lines.append(f"| {m['title']} | {'; '.join(c_cells)} | {'; '.join(go_cells)} |")
    return lines


# The summary in docs/benchmarks.md: (measurement title, label of the
# peer row that goro's first row is compared with).
HEADLINE = [
    ("spawn until parked, cold (fresh process), N=100k", "Go"),
    ("spawn until parked, warm (second round in the same process), N=100k", "Go"),
    ("VmRSS per parked goroutine, N=1M", "Go"),
    ("VmRSS + VmPTE per parked goroutine, N=1M", "Go"),
    ("ping-pong round trip over two unbuffered channels, 1 worker thread", "Go, GOMAXPROCS=1"),
    ("ping-pong round trip over two unbuffered channels, 2 worker threads", "Go, GOMAXPROCS=2"),
    ("switch round trip without a channel: goro_yield between two goroutines on 1 worker, "
     "Boost resume/yield", "Boost fiber resume/yield"),
    ("stack growth to 1 MiB, cold: first call on fresh stack memory (first call - second call)",
     "Go"),
    ("stack growth to 1 MiB, warm: stack memory already resident (first call - second call)",
     "Go"),
    ("thrash deep-task p99, Go's shrink rule", "Go, default"),
    ("thrash deep-task p99, each runtime's default", "Go, default"),
    ("pool: get and put a 64 B object", "Go sync.Pool"),
]
SUMMARY_BEGIN = "<!-- bench/run.py: summary begin -->"
SUMMARY_END = "<!-- bench/run.py: summary end -->"


def summary_lines(meas, facts, rounds):
    by_title = {m["title"]: m for m in meas}
    lines = [
        f"Latest full run: {facts['date']}, {rounds} rounds, on {facts['kernel']}, "
        f"{facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; {facts['go']}; "
        f"goro commit {facts['goro']}. Medians over rounds; the ratio is goro's value over the "
        "peer's in the same round (median over rounds). Written by `make bench`.",
        "",
        "| measurement | unit | goro | peer | peer value | goro ÷ peer |",
        "|---|---|---|---|---|---|",
    ]
    for title, peer in HEADLINE:
        m = by_title.get(title)
        if not m:
            continue
        first = m["out"][0]
        other = next((r for r in m["out"] if r["label"] == peer), None)
        if other is None:
            continue
        g = fmt(first["stats"][0]) if first["stats"] else "n/a"
        o = fmt(other["stats"][0]) if other["stats"] else "n/a"
        ratio = fmt_ratio(other["ratio"][0]) if other.get("ratio") else "n/a"
        lines.append(f"| {title} | {m['unit']} | {g} | {peer} | {o} | {ratio} |")
    return lines


def update_summary(path, meas, facts, rounds):
    """Rewrites the block between the summary markers of docs/benchmarks.md."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return
    begin, end = text.find(SUMMARY_BEGIN), text.find(SUMMARY_END)
    if begin < 0 or end < begin:
        print(f"{path}: summary markers not found; summary not updated", file=sys.stderr)
        return
    block = "\n".join([SUMMARY_BEGIN, ""] + summary_lines(meas, facts, rounds) + ["", ""])
    with open(path, "w") as f:
        f.write(text[:begin] + block + text[end:])


def command_output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def machine_facts():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    boost_version = "unknown"
    try:
        with open("/usr/include/boost/version.hpp") as f:
            m = re.search(r'#define BOOST_LIB_VERSION "([^"]+)"', f.read())
            boost_version = m.group(1).replace("_", ".") if m else boost_version
    except OSError:
        pass
    commit = command_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "include"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": f"{mem_kib / (1 << 20):.1f} GiB",
        "go": command_output(["go", "version"]),
        "gcc": command_output(["gcc", "--version"]).splitlines()[0],
        "g++": command_output(["g++", "--version"]).splitlines()[0],
        "boost": boost_version,
        "mimalloc": command_output(["dpkg-query", "-W", "-f", "${Version}", "libmimalloc-dev"]),
        "goro": commit + (" with uncommitted changes in src/ or include/" if dirty else ""),
        "max_map_count": open("/proc/sys/vm/max_map_count").read().strip(),
    }


def write_results(path, meas, selected, facts, rounds, wall_s, errors, plots):
    lines = [
        "# goro benchmark results",
        "",
        "Generated by `make bench` (`python3 bench/run.py`); every run rewrites this file.",
        "What each benchmark measures, and how, is in [benchmarks.md](benchmarks.md).",
        "",
        f"- **Date:** {facts['date']}; {rounds} rounds; the whole run took {wall_s / 60:.1f} min.",
        f"- **Machine:** {facts['kernel']}, {facts['cpu']}, {facts['cores']} cores, "
        f"{facts['ram']} RAM, vm.max_map_count = {facts['max_map_count']}.",
        f"- **Compilers and peers:** {facts['go']}; {facts['gcc']}; {facts['g++']}; "
        f"Boost {facts['boost']}; mimalloc {facts['mimalloc']}.",
        f"- **goro:** commit {facts['goro']}.",
        "",
        "How to read the tables: *median* and *min–max* are over the rounds. The first row of "
        "each table is goro's, or C's for the heap rows. *first ÷ this* divides the first row's "
        "value by this row's value in the same round, so below 1 means that the first row is "
        "smaller (faster, or less memory). *Per round* lists the value of each round in order.",
        "",
    ]
    if errors:
        lines += ["**Jobs that failed:**", ""]
        lines += [f"- {e}" for e in errors]
        lines.append("")
    if "alloc" in selected:
        lines += ["## Stack, heap and pool: ns per operation (medians)", ""]
        lines += story_table(meas)
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        for title, rel in plots:
            lines += [f"![{title}]({rel})", ""]
    for group in selected:
        lines += [f"## {GROUP_TITLES[group]}", ""]
        if group in GROUP_NOTES:
            lines += [GROUP_NOTES[group], ""]
        lines += markdown_tables(meas, group)
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")


# ---- Plots ---------------------------------------------------------------

def write_plots(meas, results, rounds):
    """Writes the gnuplot data files and runs bench/plot/*.gp; returns the
    (title, path relative to docs/) of each plot made."""
    if not shutil.which("gnuplot"):
        print("gnuplot not found: no plots", file=sys.stderr)
        return []
    os.makedirs(PLOT_DATA, exist_ok=True)
    os.makedirs(IMG, exist_ok=True)
    med = lambda job, key: (summarize(series(results, job, key, rounds)) or (None,))[0]
    made = []

    sizes = [("8k", 8 << 10), ("64k", 64 << 10), ("1m", 1 << 20), ("16m", 16 << 20)]
    if "goro_growth" in results and "go_growth" in results:
        with open(os.path.join(PLOT_DATA, "growth.dat"), "w") as f:
            f.write("# bytes goro_cold goro_warm go_cold go_warm threads_cold"
                    " (us; <= 0.01 drawn at 0.01)\n")
            for key, nbytes in sizes:
                cols = [med(job, f"{mode}_{key}_us") for job, mode in [
                    ("goro_growth", "cold"), ("goro_growth", "warm"), ("go_growth", "cold"),
                    ("go_growth", "warm"), ("threads_growth", "cold")]]
                f.write(f"{nbytes} " + " ".join(
                    "NaN" if c is None else f"{max(c, 0.01):.4f}" for c in cols) + "\n")
        if gnuplot("growth.gp", "growth.svg"):
            made.append(("Stack growth cost against stack size", "img/growth.svg"))

    counts = [("10k", 10000, "rss_10k"), ("100k", 100000, "spawn_100k"),
              ("300k", 300000, "rss_300k"), ("1m", 1000000, "rss_1m")]
    if any(f"goro_{j}" in results for _, _, j in counts):
        with open(os.path.join(PLOT_DATA, "rss.dat"), "w") as f:
            f.write("# goroutines goro_rss_mib goro_rsspte_mib go_rss_mib go_rsspte_mib\n")
            for _, n, j in counts:
                cols = [med(f"{peer}_{j}", key) for peer in ("goro", "go")
                        for key in ("cold_rss", "cold_rsspte")]
                f.write(f"{n} " + " ".join(
                    "NaN" if c is None else f"{c * n / (1 << 20):.2f}" for c in cols) + "\n")
        if gnuplot("rss.gp", "rss.svg"):
            made.append(("Resident memory against goroutine count", "img/rss.svg"))
    return made


def gnuplot(script, svg):
    argv = ["gnuplot", "-e", f"datadir='{PLOT_DATA}'; out='{os.path.join(IMG, svg)}'",
            os.path.join(ROOT, "bench", "plot", script)]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"gnuplot {script} failed: {p.stderr.strip()}", file=sys.stderr)
        return False
    return True


# ---- Main ----------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)),
                    help="rounds of the whole suite (default 5, or $BENCH_ROUNDS)")
    ap.add_argument("--only", default="",
                    help="comma-separated groups to run: spawn, rss, pingpong, growth, "
                         "thrash, alloc (default: all)")
    ap.add_argument("--results", default=None,
                    help="Markdown file to write (default: docs/benchmarks-results.md for a "
                         "full run; with --only, results.md beside the raw output)")
    ap.add_argument("--no-plots", action="store_true", help="skip gnuplot")
    args = ap.parse_args()

    groups = build_jobs()
    selected = [g for g in groups if not args.only or g in args.only.split(",")]
    unknown = [g for g in args.only.split(",") if g and g not in groups]
    if unknown or not selected or args.rounds < 1:
        ap.error(f"invalid --only {args.only!r} or --rounds {args.rounds}")
    missing = [j.argv[0] for g in selected for j in groups[g] if not os.access(j.argv[0], os.X_OK)]
    if missing:
        sys.exit("benchmark programs not built (run make bench): "
                 + ", ".join(sorted(set(missing))))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(RAW, stamp)
    os.makedirs(log_dir, exist_ok=True)
    # A partial run must not overwrite the full results or the plots.
    if args.results:
        results_path = os.path.abspath(args.results)
    elif args.only:
        results_path = os.path.join(log_dir, "results.md")
    else:
        results_path = os.path.join(ROOT, "docs", "benchmarks-results.md")
    make_plots = not args.no_plots and not args.only
    print(f"bench: {args.rounds} rounds of {', '.join(selected)}; raw output in "
          f"{os.path.relpath(log_dir, ROOT)}", flush=True)

    t0 = time.monotonic()
    results, errors = run_suite(groups, selected, args.rounds, log_dir)
    wall_s = time.monotonic() - t0

    meas = [m for m in measurements() if m["group"] in selected]
    evaluate(meas, results, args.rounds)
    print_terminal(meas, selected)
    plots = write_plots(meas, results, args.rounds) if make_plots else []
    os.makedirs(os.path.dirname(results_path), exist_ok=True)
    facts = machine_facts()
    write_results(results_path, meas, selected, facts, args.rounds, wall_s, errors, plots)
    if not args.only and not args.results:
        update_summary(os.path.join(ROOT, "docs", "benchmarks.md"), meas, facts, args.rounds)
    print(f"\nbench: {wall_s / 60:.1f} min; results in {os.path.relpath(results_path, ROOT)}")
    if errors:
        print(f"bench: {len(errors)} job(s) failed; see the raw output", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
