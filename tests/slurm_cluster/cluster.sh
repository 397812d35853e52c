#!/usr/bin/env bash
# Start or stop a one-node SLURM test cluster on loopback (as root), for tests/test_slurm.py.
#
#   tests/slurm_cluster/cluster.sh start [STATE_DIR]
#   tests/slurm_cluster/cluster.sh stop  [STATE_DIR]
#
# STATE_DIR (default /tmp/failfade-slurm) holds the pid files, spool folders and logs. The
# configs go to /etc/slurm/{slurm,gres}.conf, Slurm's default place: a SLURM_CONF elsewhere does
# not work, because snakemake's jobstep plugin drops every SLURM_* variable (SLURM_CONF too)
# before its nested `srun`. `start` refuses (exit 5) to replace a slurm.conf it did not write,
# and `stop` removes the ones it wrote. The daemons listen on 16817/16818, not the usual 6817/6818.
#
# Variant A of the reference notes: no accounting database (no slurmdbd, no MariaDB): fewer
# packages, no database daemon, up in about a second. `sacct` does not work here, so snakemake
# must use `slurm-status-command: squeue` (MinJobAge=600 keeps finished jobs in squeue) and
# `slurm-no-account: true`.
#
# Installs slurm-wlm and munge with apt when missing. Starts munged only when no munged answers
# yet, and `stop` ends only the daemons this script started, by the PIDs in their pid files.
#
# Exit codes: 0 ok, 1 the cluster did not come up, 3 not root, 4 the packages could not be
# installed, 5 /etc/slurm/slurm.conf belongs to someone else.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${2:-${FAILFADE_SLURM_STATE:-/tmp/failfade-slurm}}"
CTLD_PORT="${FAILFADE_SLURMCTLD_PORT:-16817}"
SLURMD_PORT="${FAILFADE_SLURMD_PORT:-16818}"
CONF_DIR=/etc/slurm
MARK="# written by failfade tests/slurm_cluster/cluster.sh"

log() { echo "cluster.sh: $*" >&2; }

wait_for() {  # wait_for SECONDS command...: retry every 0.25 s
  local tries=$(($1 * 4)); shift
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {  # stop_pidfile FILE NAME: TERM, then KILL after 10 s
  local f="$1" name="$2" pid
  [ -s "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignored SIGTERM; SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

install_packages() {
  local missing=0 b
  for b in slurmctld slurmd sinfo sbatch squeue scontrol scancel munged munge unmunge; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing=1
  done
  [ "$missing" = 0 ] && return 0
  log "installing slurm-wlm and munge with apt"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } >"$STATE/apt.log" 2>&1; then
    log "apt-get could not install slurm-wlm and munge (see $STATE/apt.log):"
    tail -n 5 "$STATE/apt.log" >&2
    exit 4
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # a munged is already running (not ours: stop leaves it alone)
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  # --force: start even if a killed munged left its socket behind
  runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
  wait_for 10 bash -c 'munge -n | unmunge' || { log "munged does not answer"; exit 1; }
  cp /run/munge/munged.pid "$STATE/munged.pid"  # ours: stop ends it
}

start() {
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 3; }
  mkdir -p "$STATE"
  stop_daemons  # daemons left behind by an earlier, killed run on this state folder
  if [ -e "$CONF_DIR/slurm.conf" ] && ! grep -qxF "$MARK" "$CONF_DIR/slurm.conf"; then
    log "$CONF_DIR/slurm.conf exists and was not written by this script: not replacing it"
    exit 5
  fi
  install_packages
  rm -rf "$STATE/ctld" "$STATE/spool" "$STATE/log"
  mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/log" "$CONF_DIR"

  local node cpus mem hw
  node="$(hostname -s)"
  hw="$(/usr/sbin/slurmd -C 2>/dev/null | head -n 1)"
  cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
  mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
  cpus="${cpus:-$(nproc)}"
  mem="${mem:-4000}"
  for f in slurm.conf gres.conf; do
    { echo "$MARK"; sed -e "s#@NODE@#$node#g" -e "s#@CPUS@#$cpus#g" -e "s#@MEM@#$mem#g" -e "s#@STATE@#$STATE#g" \
        -e "s#@CTLD_PORT@#$CTLD_PORT#g" -e "s#@SLURMD_PORT@#$SLURMD_PORT#g" "$HERE/$f"; } >"$CONF_DIR/$f"
  done

  start_munge
  /usr/sbin/slurmctld
  /usr/sbin/slurmd
  if ! wait_for 30 bash -c '[ "$(sinfo -h -p debug -o %T)" = idle ] && [ "$(sinfo -h -p gpu -o %T)" = idle ]'; then
    log "the node did not become idle within 30 s"
    sinfo >&2 || true
    tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    exit 1
  fi
  sinfo >&2
}

stop_daemons() {
  if alive "$STATE/slurmctld.pid"; then
    # cancel what is still queued or running on this cluster (ours: /etc/slurm/slurm.conf is ours then)
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  fi
  stop_pidfile "$STATE/slurmd.pid" slurmd
  stop_pidfile "$STATE/slurmctld.pid" slurmctld
  stop_pidfile "$STATE/munged.pid" munged
  local f
  for f in slurm.conf gres.conf; do
    if [ -f "$CONF_DIR/$f" ] && grep -qxF "$MARK" "$CONF_DIR/$f"; then rm -f "$CONF_DIR/$f"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop_daemons ;;
  *) echo "usage: $0 start|stop [STATE_DIR]" >&2; exit 2 ;;
esac
