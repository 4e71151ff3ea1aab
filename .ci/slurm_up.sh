#!/usr/bin/env bash
# A real one-node SLURM on loopback, for tests/test_slurm.py: munge, slurmctld and slurmd of Debian's
# packages (slurmctld slurmd slurm-client munge), every state, log and pid file under STATE_DIR.
#
#   .ci/slurm_up.sh STATE_DIR [GPUS]     as root; prints the partition name when the node is idle
#   .ci/slurm_down.sh STATE_DIR          stops what this started and removes its configuration
#
# The configuration must be /etc/slurm/slurm.conf: the job steps that Snakemake's SLURM plugin launches
# with srun read it there. An existing slurm.conf that this script did not write is never touched (exit 3).
# GPUS (0, 1 or 2; default 2) fake GPUs of type `testgpu` are declared as GRES on /dev/null and /dev/zero
# (SLURM wants character devices), so a job that asks for --gpus=1 or --gpus=testgpu:1 is scheduled and
# SLURM sets CUDA_VISIBLE_DEVICES for it, as on a GPU cluster; nothing opens them. Finished jobs stay visible to
# `scontrol show job` for 30 minutes (MinJobAge), so a test can check what each job asked for.
# Ports: PRUNEBENCH_SLURMCTLD_PORT / PRUNEBENCH_SLURMD_PORT (default 16817 / 16818).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 STATE_DIR [GPUS]" >&2
  exit 2
fi
state=$(realpath -m "$1")
gpus=${2:-2}
case "$gpus" in
  0|1|2) ;;
  *) echo "slurm_up: GPUS must be 0, 1 or 2" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
conf=/etc/slurm/slurm.conf
gres_conf=/etc/slurm/gres.conf
marker="# prunebench test cluster"
partition=prunebench
ctld_port=${PRUNEBENCH_SLURMCTLD_PORT:-16817}
slurmd_port=${PRUNEBENCH_SLURMD_PORT:-16818}

if [ "$(id -u)" != 0 ]; then
  echo "slurm_up: needs root (slurmd runs jobs as their submitting user)" >&2
  exit 3
fi
for tool in slurmctld slurmd sinfo sbatch srun munged munge; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "slurm_up: $tool not found; install Debian's slurmctld slurmd slurm-client munge" >&2
    exit 3
  fi
done
for f in "$conf" "$gres_conf"; do
  if [ -e "$f" ] && ! head -n 1 "$f" | grep -q "^$marker"; then
    echo "slurm_up: $f exists and was not written by this script; not replacing it" >&2
    exit 3
  fi
done
# A test cluster left over from an interrupted run: stop it first.
if [ -e "$conf" ]; then
  "$here/slurm_down.sh" || true
fi

mkdir -p "$state/ctld" "$state/spool"

# Munge: reuse a running daemon, else start one as the munge user and remember to stop it.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  runuser -u munge -- munged
  touch "$state/munged.ours"
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

host=$(hostname -s)
# CPUs and memory as slurmd detects them, so the node is not drained for a mismatch.
cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n 1)
mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)

gres_line=""
rm -f "$gres_conf"
if [ "$gpus" -gt 0 ]; then
  gres_line="Gres=gpu:testgpu:$gpus"
  echo "$marker, state in $state" >"$gres_conf"
  for device in $(printf '%s\n' /dev/null /dev/zero | head -n "$gpus"); do
    echo "NodeName=$host Name=gpu Type=testgpu File=$device" >>"$gres_conf"
  done
fi

cat >"$conf" <<EOF
$marker, state in $state
# Written by .ci/slurm_up.sh, removed by .ci/slurm_down.sh.
ClusterName=prunebench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=1800
SchedulerType=sched/backfill
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -c
slurmd -c
for _ in $(seq 150); do
  node_state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)
  case "$node_state" in
    idle|mix|alloc) echo "$partition"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
echo "slurm_up: the node did not become idle in 30 s (state: ${node_state:-none}); logs in $state" >&2
tail -n 20 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
exit 1
