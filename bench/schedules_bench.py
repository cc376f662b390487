"""1,000 schedules armed on one instance: tick lag, and what the ticks do to the API's latency.

    .venv/bin/python bench/schedules_bench.py                  # 1,000 schedules, 2 minutes of ticks
    .venv/bin/python bench/schedules_bench.py --schedules 200 --minutes 1 --seconds 60

One node (SQLite, etcd, executor, Docker). Every schedule is ``* * * * *`` (UTC), so all of them are
due in the same second of every minute: the worst burst 1,000 schedules can make. Most ticks must not
start a container (1,000 containers a minute would measure Docker, not the scheduler), so:
- ``--busy`` pipelines each hold a run that sleeps for the whole bench; the schedules on them
  (``add: true``, ``overlap: skip``) tick, find the run going and record a ``skipped`` tick. That is
  the scheduler's whole path (read the schedule, work out the due time, the overlap check, record
  the tick) minus the run itself;
- ``--firing`` pipelines have one schedule each and a one-step run that writes a file: these ticks
  fire real runs (container, commit, merge) every minute, in the same second as the burst.
Tick lag: ``recorded_at - due_at`` of every tick ``GET /schedules`` lists (skipped and fired alike:
when the tick was handled, against when it was due), and ``mao_schedule_lag_seconds`` from
``/metrics`` (fired ticks only: due time to the run's start). Ticks are also counted per minute
(each schedule must tick once a minute: nothing lost).

API latency, the raw baseline in the same run: one client, one request at a time with 20 ms between
them, cycling through a fixed mix, first with no ticking schedule (the busy runs already going), then
with every schedule armed, for the same length of time and covering ``--minutes`` minute bursts. The
ten runs a minute are load of their own (containers, commits, merges on 2 cores): in the baseline a
second client starts the same ``--firing`` pipelines at the top of every minute (``POST /pipeline/run``),
so that the two windows differ by the schedules alone (``--no-baseline-runs``: an idle baseline):
- ``GET /health``, ``GET /runs?limit=20``, ``GET /runs/{id}`` (a busy run), and ``POST /pipeline/run
  {name, cron}`` (replaces the schedule of a pipeline that ticks once a year: a database write and
  APScheduler re-arm), whose p99 together is "the API's p99" (answers that do not grow with the
  number of schedules);
- ``GET /jobs``, which lists every schedule and so grows with them: reported on its own.
Nothing here asserts. With --write, the result is appended to bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from harness import IMAGE, bench_node, percentile, record

from tests.api import Api

FIXED = ("GET /health", "GET /runs?limit=20", "GET /runs/{id}", "POST /pipeline/run {cron}")
PAUSE = 0.02


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def step(name: str, cmd: str, timeout: float | None = None) -> dict[str, object]:
    return {
        "name": name,
        "tool": "sched-tool",
        "input_dataset": "sched-in",
        "output_dataset": "sched-out",
        "cmd": ["sh", "-c", cmd],
        **({"timeout": timeout} if timeout else {}),
    }


def measure_api(api: Api, busy_run: str, seconds: float) -> dict[str, list[float]]:
    """Seconds per request, by kind of request, for ``seconds`` of one sequential client."""
    calls = {
        "GET /health": lambda: api.get("/health"),
        "GET /runs?limit=20": lambda: api.get("/runs", limit=20),
        "GET /runs/{id}": lambda: api.get(f"/runs/{busy_run}"),
        "POST /pipeline/run {cron}": lambda: api.post(
            "/pipeline/run", {"name": "sched-probe", "cron": "0 0 1 1 *"}
        ),
        "GET /jobs": lambda: api.get("/jobs"),
    }
    times: dict[str, list[float]] = defaultdict(list)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for kind, call in calls.items():
            started = time.perf_counter()
            response = call()
            times[kind].append(time.perf_counter() - started)
            assert response.status_code == 200, f"{kind}: {response.status_code} {response.text[:300]}"
            time.sleep(PAUSE)
    return times


def start_each_minute(api: Api, pipelines: list[str], stop: threading.Event) -> threading.Thread:
    """The baseline's runs: ``pipelines`` started at the top of every minute, as their schedules would."""

    def loop() -> None:
        while not stop.wait(60 - time.time() % 60):
            for name in pipelines:
                api.post("/pipeline/run", {"name": name, "wait": False})  # a 409 (still going) is a skip

    thread = threading.Thread(target=loop, name="baseline runs", daemon=True)
    thread.start()
    return thread


def lag_metrics(api: Api) -> tuple[float, float, float]:
    """(count, sum, count <= 1 s) of mao_schedule_lag_seconds{scope="instance"}."""
    values = {"count": 0.0, "sum": 0.0, "le1": 0.0}
    for line in api.get("/metrics").text.splitlines():
        if not line.startswith("mao_schedule_lag_seconds") or 'scope="instance"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("mao_schedule_lag_seconds_count"):
            values["count"] = float(value)
        elif name.startswith("mao_schedule_lag_seconds_sum"):
            values["sum"] = float(value)
        elif 'le="1.0"' in name:
            values["le1"] = float(value)
    return values["count"], values["sum"], values["le1"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=1000, help="schedules armed in all")
    parser.add_argument("--firing", type=int, default=10, help="of which fire a real run each minute")
    parser.add_argument("--busy", type=int, default=2, help="pipelines holding a run the rest tick against")
    parser.add_argument("--minutes", type=int, default=2, help="minute bursts measured while armed")
    parser.add_argument("--seconds", type=float, default=130, help="length of the baseline API window")
    parser.add_argument(
        "--no-baseline-runs", action="store_true", help="no runs in the baseline window (the old baseline)"
    )
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()
    command = (
        f".venv/bin/python bench/schedules_bench.py --schedules {args.schedules} --firing {args.firing} "
        f"--busy {args.busy} --minutes {args.minutes} --seconds {args.seconds:g}"
        + (" --no-baseline-runs" if args.no_baseline_runs else "")
        + (" --write" if args.write else "")
    )

    with bench_node("bench-sched", orchestrator_env={"MAO_LOG_LEVEL": "WARNING"}) as node:
        api = node.api
        api.tool("sched-tool", IMAGE)
        api.local_dataset("sched-in")
        api.local_dataset("sched-out")
        busy = [f"sched-busy-{i}" for i in range(args.busy)]
        firing = [f"sched-fire-{i}" for i in range(args.firing)]
        for name in busy:
            api.ok(api.post("/pipeline/init", {"name": name, "steps": [step("hold", "sleep 7200", 7200)]}))
        for name in firing:
            cmd = "date > /usr/src/app/data/$(hostname).txt"
            api.ok(api.post("/pipeline/init", {"name": name, "steps": [step("tick", cmd)]}))
        api.ok(api.post("/pipeline/init", {"name": "sched-probe", "steps": [step("never", "true")]}))
        busy_runs = [api.ok(api.post("/pipeline/run", {"name": n, "wait": False}))["id"] for n in busy]
        for run_id in busy_runs:  # running (not just recorded) before anything is measured
            deadline = time.monotonic() + 300
            while api.ok(api.get(f"/runs/{run_id}"))["status"] != "running" and time.monotonic() < deadline:
                time.sleep(0.5)
        api.ok(api.post("/pipeline/run", {"name": "sched-probe", "cron": "0 0 1 1 *"}))

        runs_note = "" if args.no_baseline_runs else f", {len(firing)} runs started each minute by a client"
        print(
            f"baseline: {args.seconds:g} s of API calls with no ticking schedule{runs_note} ...", flush=True
        )
        stop = threading.Event()
        starter = (
            None
            if args.no_baseline_runs
            else start_each_minute(Api(api.url, node.orchestrator.token), firing, stop)
        )
        baseline = measure_api(api, busy_runs[0], args.seconds)
        stop.set()
        if starter is not None:
            starter.join()

        print(f"arming {args.schedules} schedules ...", flush=True)
        arming_started = time.perf_counter()
        for name in firing:
            api.ok(api.post("/pipeline/run", {"name": name, "cron": "* * * * *", "overlap": "skip"}))
        for i in range(args.schedules - len(firing)):
            name = busy[i % len(busy)]
            request = {"name": name, "cron": "* * * * *", "overlap": "skip", "add": True}
            api.ok(api.post("/pipeline/run", request))
        arming = time.perf_counter() - arming_started
        jobs = api.ok(api.get("/jobs"))
        armed_at = datetime.now(UTC)
        # The first whole minute after arming, then --minutes bursts, then time to record them.
        first_due = (armed_at + timedelta(minutes=1)).replace(second=0, microsecond=0)
        last_due = first_due + timedelta(minutes=args.minutes - 1)
        window = max((last_due - datetime.now(UTC)).total_seconds() + 15, args.seconds)
        print(
            f"armed in {arming:.0f} s ({len(jobs)} jobs); {window:.0f} s of API calls with them ...",
            flush=True,
        )
        armed = measure_api(api, busy_runs[0], window)

        listing_started = time.perf_counter()
        schedules = api.ok(api.get("/schedules", ticks=args.minutes + 3))
        listing = time.perf_counter() - listing_started
        lag_count, lag_sum, lag_le1 = lag_metrics(api)

    lags: list[float] = []
    per_minute: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for schedule in schedules:
        if schedule["cron"] != "* * * * *":
            continue
        for tick in schedule["ticks"]:
            due = datetime.fromisoformat(tick["due_at"])
            if not first_due <= due <= last_due:
                continue
            lags.append((datetime.fromisoformat(tick["recorded_at"]) - due).total_seconds())
            per_minute[due.strftime("%H:%M")] += 1
            outcomes[tick["outcome"]] += 1
    expected = args.schedules * args.minutes

    def row(label: str, values: list[float]) -> str:
        return (
            f"| {label} | {len(values)} | {ms(statistics.median(values))} | {ms(percentile(values, 99))} "
            f"| {ms(max(values))} |"
        )

    base_fixed = [t for k in FIXED for t in baseline[k]]
    armed_fixed = [t for k in FIXED for t in armed[k]]
    baseline_label = (
        "0 schedules (baseline)"
        if args.no_baseline_runs
        else (f"0 schedules, {args.firing} runs/min by a client (baseline)")
    )
    api_table = "\n".join(
        [
            "| API request | calls | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|",
            row(f"fixed mix, {baseline_label}", base_fixed),
            row(f"fixed mix, {args.schedules} armed", armed_fixed),
            *[row(f"`{k}`, baseline", baseline[k]) for k in FIXED + ("GET /jobs",)],
            *[row(f"`{k}`, armed", armed[k]) for k in FIXED + ("GET /jobs",)],
        ]
    )
    if lags:
        lag_line = (
            f"Tick lag (`recorded_at - due_at`, {len(lags)} ticks of {expected} expected, "
            f"{dict(outcomes)}; per minute {dict(per_minute)}): p50 {ms(statistics.median(lags))} ms, "
            f"p99 {ms(percentile(lags, 99))} ms, max {ms(max(lags))} ms."
        )
    else:
        lag_line = f"Tick lag: no tick recorded in the window ({expected} expected)."
    metric_line = (
        f"`mao_schedule_lag_seconds` (every fired tick since arming, due to run start): {lag_count:.0f} observed, "
        f"mean {ms(lag_sum / lag_count) if lag_count else '-'} ms, {lag_le1:.0f} within 1 s."
    )
    verdict_lag = "within" if lags and percentile(lags, 99) <= 1 else "OVER"
    p99_base, p99_armed = percentile(base_fixed, 99), percentile(armed_fixed, 99)
    other = (
        f"Arming {args.schedules} schedules took {arming:.1f} s ({arming / args.schedules * 1000:.1f} ms each); "
        f"`GET /schedules?ticks={args.minutes + 3}` with all of them took {listing * 1000:.0f} ms."
    )
    summary = (
        f"**Tick lag p99 {ms(percentile(lags, 99)) if lags else '-'} ms** ({verdict_lag} the 1 s target); "
        f"**API p99 {ms(p99_base)} ms with none, {ms(p99_armed)} ms armed** (fixed mix)."
    )
    body = "\n\n".join([api_table, lag_line, metric_line, other, summary])
    print("\n" + body)
    if args.write:
        record("1,000 schedules" if args.schedules == 1000 else f"{args.schedules} schedules", command, body)


if __name__ == "__main__":
    main()
