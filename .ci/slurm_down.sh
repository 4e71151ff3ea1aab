#!/usr/bin/env bash
# Stop the test cluster of .ci/slurm_up.sh: cancel its jobs, stop slurmd and slurmctld (and munged if
# slurm_up started it) by their pid files, and remove the configuration it wrote.
#
#   .ci/slurm_down.sh [STATE_DIR]     without STATE_DIR: the one named in /etc/slurm/slurm.conf
set -uo pipefail

conf=/etc/slurm/slurm.conf
gres_conf=/etc/slurm/gres.conf
marker="# prunebench test cluster"

ours() { [ -e "$1" ] && head -n 1 "$1" | grep -q "^$marker"; }

if [ $# -ge 1 ]; then
  state=$(realpath -m "$1")
elif ours "$conf"; then
  state=$(head -n 1 "$conf" | sed -n 's/.*, state in //p')
else
  echo "slurm_down: no STATE_DIR given and $conf is not a test cluster's" >&2
  exit 0
fi

# stop_pid PIDFILE: TERM, wait up to 10 s, then KILL; only the process the pid file names.
stop_pid() {
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

if ours "$conf" && [ -s "$state/slurmctld.pid" ] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null; then
  # Jobs still running (a failed test): cancel them and give their steps a moment to end.
  scancel --full --quiet --partition=prunebench 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
stop_pid "$state/slurmd.pid"
stop_pid "$state/slurmctld.pid"
if [ -e "$state/munged.ours" ]; then
  stop_pid /run/munge/munged.pid
  rm -f "$state/munged.ours"
fi
for f in "$conf" "$gres_conf"; do
  if ours "$f"; then rm -f "$f"; fi
done
exit 0
