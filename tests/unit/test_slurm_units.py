"""The Slurm backend's pure pieces: the sbatch and runtime arguments (with generated commands,
environments and placements, and the job script itself run against a stand-in runtime), reading the
queue, the jobcomp file and the script's report, how a job ended, the cluster's facts, the checks at
init, the settings and the shared root's files. The real cluster is tests/integration/backends."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config.backends.kinds import backend_values
from orchestrator.config.backends.slurm import SlurmSettings
from orchestrator.executors.seam import (
    INPUT_MOUNT,
    OUTPUT_MOUNT,
    ContainerSpec,
    EndKind,
    Identity,
    Limits,
    OutputData,
)
from orchestrator.executors.slurm_answers import (
    MAO_CANCEL,
    MAO_TIMEOUT,
    SQUEUE_FIELDS,
    JobView,
    Report,
    job_end,
    labels_of,
    parse_jobcomp_line,
    parse_report,
    parse_squeue,
    parse_squeue_line,
    submit_limit_reached,
    wait_status,
)
from orchestrator.executors.slurm_checks import capabilities_of, cluster_problem, health_of, spec_problem
from orchestrator.executors.slurm_cli import gres_gpus, parse_sinfo, slurm_duration
from orchestrator.executors.slurm_command import (
    PLACEMENT_KEYS,
    comment,
    env_file,
    env_problem,
    placement_problem,
    remove_arguments,
    run_arguments,
    sbatch_arguments,
    time_limit_minutes,
)
from orchestrator.executors.slurm_ends import SCRIPT
from orchestrator.executors.slurm_files import drop_orphan_logs, job_files, jobcomp_line

ROOT = Path("/shared")


def slurm_settings(tmp_path: Path | None = None, **values: Any) -> SlurmSettings:
    root = tmp_path or Path("/tmp")
    return SlurmSettings.model_validate({"shared_root": root, **values})


def spec(**fields: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "identity": Identity(
            instance="lab.A_1", pipeline="p", run="r1", step="s", position=1, attempt=2, shard=3
        ),
        "image": "tool:1",
        "cmd": ["run", "--fast"],
        "env": {"A": "1"},
        "output": OutputData(folder=Path("/w")),
        "user": (1000, 1000),
        "timeout": 5,
    }
    values.update(fields)
    return ContainerSpec(**values)


def job_arguments(
    given: ContainerSpec, configured: SlurmSettings, image: str = "sha256:" + "a" * 64
) -> list[str]:
    files = job_files(configured.shared_root, given.name)
    run = run_arguments(
        given,
        configured,
        image=image,
        input_folder=configured.shared_root / given.name / "input",
        output_folder=configured.shared_root / given.name / "output",
        env=files.env,
        cpus=2,
    )
    return sbatch_arguments(given, configured, script=SCRIPT, files=files, run=run, image=image, cpus=2)


# -- the request --------------------------------------------------------------------------------------


def test_the_job_holds_every_rule() -> None:
    configured = slurm_settings(partition="batch", account="lab", job_memory_overhead="64m")
    given = spec(
        limits=Limits(memory=256 * 1024**2, cpus=1.5, pids=40, gpus=2),
        timeout=61,
        placement={"partition": "gpu", "constraint": "a100&ib"},
    )
    args = job_arguments(given, configured)
    script_at = args.index(str(SCRIPT))
    options = args[:script_at]
    assert all(option.startswith("--") for option in options)
    assert f"--job-name={given.name}" in options
    assert "--no-requeue" in options and "--export=NONE" in options and "--parsable" in options
    assert "--time=2" in options  # 61 s: two whole minutes
    assert "--mem=320M" in options  # 256 MiB and the overhead
    assert "--cpus-per-task=2" in options and "--gres=gpu:2" in options
    assert "--partition=gpu" in options and "--account=lab" in options and "--constraint=a100&ib" in options
    assert (
        labels_of(next(o for o in options if o.startswith("--comment="))[len("--comment=") :])
        == given.all_labels()
    )
    mode, name, image, gpus, count = args[script_at + 1 : script_at + 6]
    assert (mode, name, gpus, count) == ("run", given.name, "docker", "1")
    assert args[script_at + 6 : script_at + 8] == ["docker", "--"]
    run = args[script_at + 8 :]
    assert run[-3:] == [image, "run", "--fast"]
    for rule in (
        "--user=1000:1000",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--pids-limit=40",
        "--cpus=1.5",
        "--network=none",
        "--read-only",
        "--init",
        "--pull=never",
        f"--memory={256 * 1024**2}",
        f"--memory-swap={256 * 1024**2}",
        f"--volume=/tmp/{given.name}/input:{INPUT_MOUNT}:ro",
        f"--volume=/tmp/{given.name}/output:{OUTPUT_MOUNT}:rw",
        f"--env-file=/tmp/{given.name}/env",
        "--label=mao.instance=lab.A_1",
    ):
        assert rule in run, rule
    assert any(a.startswith("--tmpfs=/tmp:rw,nosuid,nodev,size=") for a in run)
    assert not any("1" == a.split("=", 1)[-1] and a.startswith("--env") for a in run)  # env never in argv


def test_podman_and_its_options() -> None:
    configured = slurm_settings(
        runtime="podman",
        runtime_path="/usr/bin/podman",
        runtime_options="--root=/x,--cgroup-manager=cgroupfs",
    )
    args = job_arguments(spec(limits=Limits(gpus=1)), configured)
    at = args.index(str(SCRIPT))
    assert args[at + 4 : at + 10] == [
        "cdi",
        "3",
        "/usr/bin/podman",
        "--root=/x",
        "--cgroup-manager=cgroupfs",
        "--",
    ]


def test_no_pids_limit_given_is_bounded_and_root_is_refused() -> None:
    assert "--pids-limit=512" in job_arguments(spec(limits=Limits()), slurm_settings())
    with pytest.raises(ValueError):
        job_arguments(spec(user=(0, 0)), slurm_settings())
    assert spec_problem(spec(user=(0, 5)), None) == ("user", "user: tools never run as root (uid 0)")
    assert spec_problem(spec(image="-v"), None) == ("image", "image: '-v' must not start with '-'")
    assert spec_problem(spec(image_id="a b"), None) == ("image", "image: 'a b' must not contain whitespace")
    assert spec_problem(spec(), None) is None


@given(timeout=st.floats(min_value=0.001, max_value=1e7))
def test_the_time_limit_is_never_less_than_the_timeout(timeout: float) -> None:
    minutes = time_limit_minutes(timeout)
    assert minutes >= 1 and minutes * 60 >= timeout and (minutes - 1) * 60 < max(timeout, 60)


@given(
    cmd=st.lists(st.text(st.characters(blacklist_characters="\0"), max_size=30), max_size=8),
    env=st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
        st.text(st.characters(blacklist_characters="\0\n\r"), max_size=20).map(lambda v: "VALUE-" + v),
        max_size=6,
    ),
)
@settings(max_examples=60)
def test_generated_commands_and_environments_pass_unchanged(cmd: list[str], env: dict[str, str]) -> None:
    given = spec(cmd=cmd, env=env)
    assert env_problem(env) is None
    args = job_arguments(given, slurm_settings(), image="tool:1")
    assert args[-len(cmd) - 1 :] == ["tool:1", *cmd]
    # One line a variable, split as the runtimes read an env file: at "\n" only, at the first "=".
    parsed = dict(line.split("=", 1) for line in env_file(env).split("\n") if line)
    assert parsed == env
    # No value of the environment reaches the command line (the cluster's users can read it).
    assert not any("VALUE-" in a for a in args)


@given(placement=st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4))
def test_placement_takes_slurm_options_only(placement: dict[str, str]) -> None:
    problem = placement_problem(placement)
    fine = all(
        key in PLACEMENT_KEYS and value and " " not in value and "=" not in value and "," not in value
        for key, value in placement.items()
    )
    if not fine:
        assert problem is not None
    if problem is None:
        args = job_arguments(spec(placement=placement), slurm_settings())
        for key, value in placement.items():
            assert f"--{key}={value}" in args


def test_env_a_file_cannot_carry_is_refused() -> None:
    assert "line break" in (env_problem({"A": "x\ny"}) or "")
    assert "variable name" in (env_problem({"A-B": "x"}) or "")


def test_the_removal_job() -> None:
    args = remove_arguments("mao-x-r-0-1", "node7", slurm_settings(partition="p"), script=SCRIPT)
    assert "--nodelist=node7" in args and "--partition=p" in args and "--time=1" in args
    assert args[args.index(str(SCRIPT)) :] == [
        str(SCRIPT),
        "remove",
        "mao-x-r-0-1",
        "-",
        "none",
        "1",
        "docker",
        "--",
    ]
    assert not any(a.startswith("--comment") for a in args)


# -- the job script, against a stand-in runtime ------------------------------------------------------------

FAKE_RUNTIME = r"""#!/bin/bash
# Records each call (NUL-separated arguments) and answers as a runtime would.
printf '%s\0' "$@" >> "$CALLS"; printf '\036\0' >> "$CALLS"
case "$1" in
    image) sleep "${FAKE_IMAGE_SECONDS:-0}"; [ "$3" = missing ] && exit 1; exit 0 ;;
    inspect) echo "${FAKE_STATE:-false 7}" ;;
    kill) touch "$CALLS.killed" ;;
    run)
        if [ -n "${FAKE_RUN_UNTIL_KILLED:-}" ]; then
            for _ in $(seq 1 200); do [ -e "$CALLS.killed" ] && exit 137; sleep 0.1; done
            exit 99
        fi
        echo "tool says hi"; echo "tool err" >&2; exit 7 ;;
esac
exit 0
"""


def run_script(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    runtime = tmp_path / "runtime"
    runtime.write_text(FAKE_RUNTIME)
    runtime.chmod(0o755)
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    done = subprocess.run(
        ["bash", str(SCRIPT), *[a.replace("RUNTIME", str(runtime)) for a in args]],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "CALLS": str(calls), **env},
        timeout=30,
        check=False,
    )
    recorded: list[list[str]] = [[]]
    for word in calls.read_bytes().decode().split("\0")[:-1] if calls.exists() else []:
        if word == "\x1e":
            recorded.append([])
        else:
            recorded[-1].append(word)
    return done, recorded[:-1]


def test_the_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0


@given(
    cmd=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\x1e"), max_size=20),
        max_size=6,
    )
)
@settings(max_examples=15, deadline=None)
def test_the_script_hands_every_argument_over_unchanged(
    tmp_path_factory: pytest.TempPathFactory, cmd: list[str]
) -> None:
    tmp_path = tmp_path_factory.mktemp("script")
    done, calls = run_script(
        tmp_path, "run", "c1", "img", "none", "1", "RUNTIME", "--", "--user=1:1", "img", *cmd
    )
    assert done.returncode == 7, done.stderr
    run = next(c for c in calls if c and c[0] == "run")
    assert run[1:] == ["--name", "c1", "--user=1:1", "img", *cmd]
    assert "tool says hi\ntool err\n" in done.stdout or "tool err\ntool says hi\n" in done.stdout
    report = parse_report(done.stderr)
    assert (report.started, report.exit_code, report.oom) == (True, 7, False)
    assert ["rm", "-f", "c1"] in calls  # removed at the end too


def test_the_script_reports_a_missing_image_and_oom(tmp_path: Path) -> None:
    done, calls = run_script(tmp_path, "run", "c1", "missing", "none", "1", "RUNTIME", "--", "missing")
    assert done.returncode == 125 and parse_report(done.stderr).image_unavailable
    assert not any(c and c[0] == "run" for c in calls)
    done, _ = run_script(
        tmp_path, "run", "c1", "img", "none", "1", "RUNTIME", "--", "img", FAKE_STATE="true 137"
    )
    report = parse_report(done.stderr)
    assert report.oom and report.exit_code == 137 and done.returncode == 137


def test_the_script_gives_the_jobs_gpus(tmp_path: Path) -> None:
    _, calls = run_script(
        tmp_path, "run", "c1", "img", "docker", "1", "RUNTIME", "--", "img", SLURM_JOB_GPUS="0,2"
    )
    assert next(c for c in calls if c[0] == "run")[3:5] == ["--gpus", "device=0,2"]
    _, calls = run_script(
        tmp_path, "run", "c1", "img", "cdi", "1", "RUNTIME", "--", "img", SLURM_JOB_GPUS="0,2"
    )
    assert next(c for c in calls if c[0] == "run")[3:7] == [
        "--device",
        "nvidia.com/gpu=0",
        "--device",
        "nvidia.com/gpu=2",
    ]
    done, calls = run_script(tmp_path, "run", "c1", "img", "docker", "1", "RUNTIME", "--", "img")
    assert done.returncode == 125 and "no-gpus" in done.stderr


def start_script(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], Path]:
    runtime = tmp_path / "runtime"
    runtime.write_text(FAKE_RUNTIME)
    runtime.chmod(0o755)
    calls = tmp_path / "calls"
    process = subprocess.Popen(
        ["bash", str(SCRIPT), "run", "c1", "img", "none", "1", str(runtime), "--", "img"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"], "CALLS": str(calls), **env},
    )
    return process, calls


def calls_of(calls: Path) -> list[str]:
    return [c.split("\0", 1)[0] for c in calls.read_text().split("\036\0") if c] if calls.exists() else []


def test_told_to_stop_before_the_container_started_it_never_starts(tmp_path: Path) -> None:
    process, calls = start_script(tmp_path, FAKE_IMAGE_SECONDS="1")
    while "image" not in calls_of(calls):
        time.sleep(0.05)
    process.terminate()  # scancel, the time limit: SIGTERM
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143 and "mao-job: signal TERM" in err
    assert "run" not in calls_of(calls) and calls_of(calls)[-1] == "rm"


def test_told_to_stop_while_it_runs_the_container_is_killed_and_removed(tmp_path: Path) -> None:
    process, calls = start_script(tmp_path, FAKE_RUN_UNTIL_KILLED="1")
    while "run" not in calls_of(calls):
        time.sleep(0.05)
    process.terminate()
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143 and "mao-job: signal TERM" in err
    assert "kill" in calls_of(calls) and calls_of(calls)[-1] == "rm"


def test_the_script_removes_a_container(tmp_path: Path) -> None:
    done, calls = run_script(tmp_path, "remove", "c9", "-", "none", "1", "RUNTIME", "--")
    assert done.returncode == 0 and calls == [["rm", "-f", "c9"]]


# -- reading Slurm ------------------------------------------------------------------------------------


def squeue_line(view: JobView, text: str) -> str:
    def epoch(value: float | None) -> str:
        return "N/A" if value is None else str(int(value))

    values = [view.job_id, view.name, view.state, view.reason, view.node or "n/a", epoch(view.submitted),
              epoch(view.started), epoch(view.ended), str(view.exit_status or 0), text]  # fmt: skip
    assert len(values) == len(SQUEUE_FIELDS)
    return "|".join(values) + "|"


@given(
    labels=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
    state=st.sampled_from(["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]),
)
def test_a_queue_line_reads_back(labels: dict[str, str], state: str) -> None:
    ended = state in ("COMPLETED", "FAILED", "CANCELLED")
    view = JobView("12", "mao-x", state, "None", "node1", 100.0, 110.0 if state != "PENDING" else None,
                   120.0 if ended else None, 768 if ended else 0, labels)  # fmt: skip
    text = "mao/v1 " + json.dumps(labels, sort_keys=True, separators=(",", ":"))
    assert parse_squeue_line(squeue_line(view, text)) == view
    assert parse_squeue("garbage\n" + squeue_line(view, text) + "\n1|x\n") == [view]


def test_estimates_are_not_times() -> None:
    [pending] = parse_squeue("5|mao-a|PENDING|Resources|n/a|100|99999999999|99999999999|0|other comment|")
    assert pending.started is None and pending.ended is None and pending.labels is None
    assert not pending.has_started and not pending.has_ended


def test_comments_of_others_are_not_labels() -> None:
    assert labels_of("mao/v1 [1]") is None and labels_of("hello") is None and labels_of("mao/v1 {x") is None
    assert labels_of(comment(spec()))["mao.run"] == "r1"  # type: ignore[index]


def test_jobcomp(tmp_path: Path) -> None:
    lines = [
        "JobId=11 UserId=root(0) GroupId=root(0) Name=other JobState=COMPLETED Partition=mao TimeLimit=1 "
        "StartTime=2026-01-02T03:04:06 EndTime=2026-01-02T03:04:09 NodeList=node1 NodeCnt=1 ProcCnt=1 "
        "SubmitTime=2026-01-02T03:04:05 DerivedExitCode=0:0 ExitCode=0:0 ",
        "JobId=1 UserId=root(0) GroupId=root(0) Name=mao-a JobState=FAILED Partition=mao TimeLimit=1 "
        "StartTime=2026-01-02T03:04:06 EndTime=2026-01-02T03:04:09 NodeList=node1 NodeCnt=1 ProcCnt=1 "
        "SubmitTime=2026-01-02T03:04:05 DerivedExitCode=0:0 ExitCode=3:0 ",
        "JobId=2 UserId=root(0) GroupId=root(0) Name=mao-b JobState=CANCELLED NodeList=(null) ExitCode=0:15 ",
    ]
    path = tmp_path / "jobcomp.txt"
    path.write_text("\n".join(lines) + "\n")
    line = jobcomp_line(path, "1")
    assert line is not None and line.startswith("JobId=1 ")
    view = parse_jobcomp_line(line)
    assert view is not None and (view.name, view.state, view.node) == ("mao-a", "FAILED", "node1")
    assert wait_status(view.exit_status) == (3, None)
    assert view.ended is not None and view.started is not None and view.ended - view.started == 3
    cancelled = parse_jobcomp_line(jobcomp_line(path, "2") or "")
    assert (
        cancelled is not None and wait_status(cancelled.exit_status) == (None, 15) and cancelled.node is None
    )
    assert jobcomp_line(path, "3") is None and jobcomp_line(tmp_path / "none", "1") is None
    (tmp_path / "empty").write_text("")
    assert jobcomp_line(tmp_path / "empty", "1") is None


def test_the_report() -> None:
    text = (
        "slurmstepd: error: *** JOB 4 CANCELLED ***\nmao-job: node n1\nmao-job: start\nmao-job: signal TERM\n"
    )
    assert parse_report(text) == Report(node="n1", started=True, signal="TERM")
    assert parse_report("mao-job: exit 137 oom true\n").oom
    assert parse_report("mao-job: error no-container (x)\n").error == "no-container (x)"


def view_of(state: str, status: int | None = 0, reason: str = "None") -> JobView:
    return JobView("1", "mao-a", state, reason, "n1", 1.0, 2.0, 3.0, status, {})


@pytest.mark.parametrize(
    ("view", "report", "mao", "kind", "code"),
    [
        (view_of("COMPLETED"), Report(started=True, exit_code=0), None, EndKind.COMPLETED, 0),
        (view_of("FAILED", 3 << 8), Report(started=True, exit_code=3), None, EndKind.FAILED, 3),
        (
            view_of("FAILED", 137 << 8),
            Report(started=True, exit_code=137, oom=True),
            None,
            EndKind.OOM_KILLED,
            137,
        ),
        (view_of("FAILED", 137 << 8), Report(started=True, exit_code=137), None, EndKind.FAILED, 137),
        (view_of("FAILED", 9, "JobLaunchFailure"), Report(started=True), None, EndKind.OOM_KILLED, 137),
        (view_of("OUT_OF_MEMORY", 9), Report(started=True), None, EndKind.OOM_KILLED, 137),
        (view_of("FAILED", 125 << 8), Report(image_unavailable=True), None, EndKind.IMAGE_UNAVAILABLE, None),
        (view_of("TIMEOUT", 15), Report(started=True, signal="TERM"), None, EndKind.TIMED_OUT, None),
        (view_of("CANCELLED", 15), Report(started=True, signal="TERM"), MAO_TIMEOUT, EndKind.TIMED_OUT, None),
        (view_of("CANCELLED", 15), Report(started=True, signal="TERM"), MAO_CANCEL, EndKind.CANCELLED, None),
        (view_of("CANCELLED", 15), Report(started=True, signal="TERM"), None, EndKind.NODE_LOST, None),
        (view_of("NODE_FAIL", 0), Report(started=True), None, EndKind.NODE_LOST, None),
        (view_of("BOOT_FAIL", 0), Report(), None, EndKind.NODE_LOST, None),
        (view_of("PREEMPTED", 15), Report(started=True), None, EndKind.NODE_LOST, None),
        (view_of("FAILED", 125 << 8), Report(error="no-container (x)"), None, EndKind.NODE_LOST, None),
        (view_of("FAILED", 11), Report(started=True), None, EndKind.FAILED, 139),
        (view_of("REVOKED", None), Report(), None, EndKind.LOST, None),
    ],
)
def test_how_a_job_ended(
    view: JobView, report: Report, mao: str | None, kind: EndKind, code: int | None
) -> None:
    verdict = job_end(view, report, mao, 5)
    assert (verdict.kind, verdict.exit_code) == (kind, code), verdict
    assert verdict.message


# -- the cluster -----------------------------------------------------------------------------------------

SINFO = """\
gpu|gpu|up|1-00:00:00|g1|mixed|64|512000|gpu:a100:4(S:0-1)|a100,ib
gpu|gpu|up|1-00:00:00|g2|down*|64|512000|gpu:a100:8,shard:4|a100
cpu|cpu*|up|infinite|c1|idle|32|128000|(null)|(null)
"""


def test_cluster_facts_and_what_they_refuse() -> None:
    facts = parse_sinfo(SINFO, time.monotonic())
    assert facts.partition(None).name == "cpu"  # type: ignore[union-attr]
    gpu = facts.partition("gpu")
    assert (
        gpu is not None
        and gpu.max_gpus == 8
        and gpu.time_limit == 86400
        and [n.name for n in gpu.usable] == ["g1"]
    )
    configured = slurm_settings(partition="gpu")
    assert cluster_problem(spec(limits=Limits(gpus=8)), configured, facts) is None  # g2 is down: it waits
    field, message = cluster_problem(spec(limits=Limits(gpus=9)), configured, facts) or ("", "")
    assert field == "gpus" and "more than 8" in message
    assert cluster_problem(spec(timeout=90000), configured, facts) == (
        "timeout",
        "timeout: 90000s is past partition gpu's time limit of 86400s",
    )
    assert (cluster_problem(spec(placement={"partition": "x"}), configured, facts) or ("",))[0] == "placement"
    assert cluster_problem(spec(limits=Limits(memory=600 * 1024**3)), configured, facts)[0] == "memory"  # type: ignore[index]
    assert cluster_problem(spec(), configured, None) is None
    capabilities = capabilities_of(configured, facts)
    assert capabilities.gpus == 8 and "gpus" in capabilities.enforces
    assert "gpus" not in capabilities_of(slurm_settings(), facts).enforces
    assert health_of(configured, facts, None, root=None).ok
    assert not health_of(slurm_settings(partition="x"), facts, None, root=None).ok
    assert health_of(configured, facts, None, root="the shared root /s is full").message == "the shared root /s is full"
    assert health_of(configured, None, "no controller", root=None).message == "no controller"


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:1,gpu:t4:2", 3), ("shard:4", 0)],
)
def test_gres_gpus(gres: str, gpus: int) -> None:
    assert gres_gpus(gres) == gpus


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("infinite", None),
        ("UNLIMITED", None),
        ("30", 1800),
        ("30:00", 1800),
        ("2:00:00", 7200),
        ("1-00:00:00", 86400),
    ],
)
def test_slurm_durations(text: str, seconds: float | None) -> None:
    assert slurm_duration(text) == seconds


# -- settings and files -------------------------------------------------------------------------------------


def test_settings(tmp_path: Path) -> None:
    configured = SlurmSettings.model_validate(
        backend_values(
            "hpc-1",
            {
                "MAO_BACKEND_HPC_1_SHARED_ROOT": str(tmp_path),
                "MAO_BACKEND_HPC_1_PARTITION": "gpu",
                "MAO_BACKEND_HPC_1_JOB_MEMORY_OVERHEAD": "256m",
                "MAO_BACKEND_HPC_1_RUNTIME": "podman",
                "MAO_OTHER": "x",
            },
        )
    )
    assert configured.partition == "gpu" and configured.job_memory_overhead == 256 * 1024**2
    assert configured.gpu_mode == "cdi" and configured.runtime_words() == ["podman"]
    for bad in (
        {"shared_root": "relative"},
        {"shared_root": str(tmp_path / "absent")},
        {"shared_root": str(tmp_path), "partition": "a b"},
        {"shared_root": str(tmp_path), "runtime": "lxc"},
        {"shared_root": str(tmp_path), "runtime_path": "podman"},
        {"shared_root": str(tmp_path), "runtime_options": "--root /x"},
        {"shared_root": str(tmp_path), "slurm_bin": str(tmp_path)},
        {"shared_root": str(tmp_path), "unknown": "1"},
    ):
        with pytest.raises(ValidationError):
            SlurmSettings.model_validate(bad)
    odd = tmp_path / "a:b"
    odd.mkdir()
    with pytest.raises(ValidationError, match="may not hold"):
        SlurmSettings.model_validate({"shared_root": str(odd)})


def test_orphan_logs_of_the_instance_go_when_old(tmp_path: Path) -> None:
    for name in (
        "mao-aaaa-r-0-1.out",
        "mao-aaaa-r-0-1.err",
        "mao-aaaa-r-0-2.out",
        "mao-bbbb-r-0-1.out",
        "x.out",
    ):
        (tmp_path / name).write_text("")
    old = time.time() - 7200
    for name in ("mao-aaaa-r-0-1.out", "mao-aaaa-r-0-1.err", "mao-bbbb-r-0-1.out", "x.out"):
        os.utime(tmp_path / name, (old, old))
    removed = drop_orphan_logs(tmp_path, {"mao-aaaa-"}, keep=set())
    assert sorted(removed) == ["mao-aaaa-r-0-1.err", "mao-aaaa-r-0-1.out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mao-aaaa-r-0-2.out", "mao-bbbb-r-0-1.out", "x.out"]


def test_every_slurm_setting_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text()
    section = docs.split("\n## Slurm\n", 1)[1].split("\n## ", 1)[0]
    missing = [key.upper() for key in SlurmSettings.model_fields if f"`{key.upper()}`" not in section]
    assert not missing, f"add these keys to the Slurm section of docs/backends.md: {missing}"


@pytest.mark.parametrize(
    ("message", "later"),
    [
        ("sbatch: error: QOSMaxSubmitJobPerUserLimit", True),
        (
            "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
            True,
        ),
        ("sbatch: error: AssocMaxSubmitJobLimit", True),
        (
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
            False,
        ),
        ("sbatch: error: Batch job submission failed: Requested node configuration is not available", False),
    ],
)
def test_a_submit_limit_is_for_now(message: str, later: bool) -> None:
    assert submit_limit_reached(message) is later
