#!/usr/bin/env bash
# A single-node Slurm on this machine, for CI and for trying the job scripts (as root).
#   jobs/slurm/local-slurm.sh start DIR   generate DIR/slurm.conf, start slurmctld + slurmd
#   jobs/slurm/local-slurm.sh stop DIR    stop both daemons by their pid files
# Then: export SLURM_CONF=DIR/slurm.conf, and sbatch/srun/squeue/scancel use it.
# Needs Debian's slurmctld, slurmd and slurm-client (apt-get install -y ...); no munge:
# authentication is off, which is only fit for a machine of your own.
set -euo pipefail
cmd=${1:?start or stop}
dir=$(realpath -m "${2:?state folder}")
conf=$dir/slurm.conf

case $cmd in
start)
  mkdir -p "$dir/state" "$dir/spool"
  host=$(hostname -s)
  first_job=$(( $(date +%s) % 50000000 + 1000 ))
  cat > "$conf" <<CONF
ClusterName=mpips-local
# Job ids start where no earlier local cluster's did: MPICH under srun names its shared
# memory after "jobid.stepid", and a segment left by a killed step must never be reused.
FirstJobId=$first_job
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# The node advertises more CPUs than it has, so that 4-6 MPI tasks fit on 2 cores.
SlurmdParameters=config_overrides
MinJobAge=4
KillOnBadExit=1
JobRequeue=1
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=8 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$conf
  slurmctld -i -f "$conf"
  slurmd -f "$conf"
  for _ in $(seq 100); do                    # wait until the node takes jobs
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "local Slurm up: export SLURM_CONF=$conf"
      exit 0
    fi
    sleep 0.2
  done
  echo "local Slurm did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  exit 1
  ;;
stop)
  for d in slurmd slurmctld; do
    if [[ -f $dir/$d.pid ]]; then
      kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
    fi
  done
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
