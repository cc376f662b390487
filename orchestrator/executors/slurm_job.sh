#!/bin/bash
# MAO's Slurm batch job (docs/backends.md#slurm): runs one tool container and makes sure it dies
# with the job. A fixed file: sbatch sends it as the job's script, and everything that varies comes
# as arguments, built as a list by orchestrator/executors/slurm_command.py (never a shell string):
#
#   slurm_job.sh run NAME IMAGE GPU-FLAG N RUNTIME-WORD-1 .. RUNTIME-WORD-N -- RUN-ARGUMENT ...
#   slurm_job.sh remove NAME - none N RUNTIME-WORD-1 .. RUNTIME-WORD-N --
#
# "remove" removes the container NAME and nothing else: MAO submits it to the node of a job that was
# killed without a chance to remove its container (SIGKILL: Slurm's memory kill, scancel -s KILL).
# NAME the container's name; IMAGE the image (checked before the run: a node without it is an
# engine failure, not the tool's); GPU-FLAG "docker", "cdi" or "none": how the GPUs Slurm gave the
# job (SLURM_JOB_GPUS) reach the container; RUNTIME-WORD-* the runtime and its global options;
# RUN-ARGUMENT ... what follows "run" (options, image, command).
#
# The tool's output (stdout and stderr of the container) is this job's stdout: the log MAO follows.
# This script's own lines go to the job's stderr, one "mao-job: KEY VALUE" each, never into the log.
#
# scancel and the time limit send SIGTERM to this script and to the runtime's client, not to the
# container (the engine's daemon started it): the trap kills the container, and the EXIT trap
# removes it, so that nothing of the job outlives it on the node.
set -u

mode=$1 name=$2 image=$3 gpus=$4 count=$5
shift 5
runtime=("${@:1:count}")
shift "$count"
if [ "${1:-}" != "--" ]; then
    echo "mao-job: error bad-arguments" >&2
    exit 2
fi
shift

say() { printf 'mao-job: %s\n' "$*" >&2; }
child=""
stopping=0
stop() {
    stopping=1
    say "signal $1"
    "${runtime[@]}" kill "$name" >/dev/null 2>&1
}
remove() { "${runtime[@]}" rm -f "$name" >/dev/null 2>&1; }
trap 'stop TERM' TERM
trap 'stop INT' INT
trap 'stop HUP' HUP
trap remove EXIT

say "node ${SLURMD_NODENAME:-$(hostname)}"
if [ "$mode" = remove ]; then
    exit 0  # the EXIT trap removes the container
fi
if ! "${runtime[@]}" image inspect "$image" >/dev/null 2>&1; then
    say "image-unavailable $image"
    exit 125
fi

devices=()
if [ "$gpus" != "none" ]; then
    if [ -z "${SLURM_JOB_GPUS:-}" ]; then
        say "error no-gpus (the job has no SLURM_JOB_GPUS: is gres/gpu configured with File= on this node?)"
        exit 125
    fi
    case "$gpus" in
        docker) devices=(--gpus "device=${SLURM_JOB_GPUS}") ;;
        cdi)
            IFS=, read -r -a ids <<<"$SLURM_JOB_GPUS"
            for id in "${ids[@]}"; do devices+=(--device "nvidia.com/gpu=${id}"); done
            ;;
    esac
fi

remove  # a container of this name left by a job of the same attempt that died with its node
if [ "$stopping" -eq 1 ]; then
    exit 143  # told to stop before the container was started: never start it
fi
say "start"
"${runtime[@]}" run --name "$name" "${devices[@]}" "$@" 2>&1 &
child=$!
# wait returns early when a trapped signal arrives. Once told to stop, the container is killed
# again until the client is gone: a signal that came while the runtime was still creating it found
# nothing to kill.
while kill -0 "$child" 2>/dev/null; do
    if [ "$stopping" -eq 1 ]; then
        sleep 0.5
        "${runtime[@]}" kill "$name" >/dev/null 2>&1
    else
        wait "$child"
    fi
done
wait "$child"
code=$?
if [ "$stopping" -eq 1 ]; then
    exit 143
fi
inspect() { "${runtime[@]}" inspect --format '{{.State.OOMKilled}} {{.State.ExitCode}}' "$name" 2>/dev/null; }
state=$(inspect)
# The runtime may mark the out-of-memory kill a moment after the exit: look again before saying 137.
for _ in 1 2 3 4 5; do
    case "$state" in "false 137") sleep 0.2; state=$(inspect) ;; *) break ;; esac
done
if [ -z "$state" ]; then
    say "error no-container (the runtime exited $code without a container)"
    exit 125
fi
read -r oom exitcode <<<"$state"
say "exit $exitcode oom $oom"
exit "$exitcode"
