# shellcheck shell=bash
# shellcheck disable=SC2034  # PIDFILE_* are set here for the scripts that source this file
# The qwen-server PID file, in one place: sourced by start_server.sh, stop_server.sh and
# analyze_film.sh. Nothing here runs on its own.
#
# The file holds one line, "PID START_TOKEN". The start token tells this process apart from
# any later process that gets the same PID: with /proc it is "proc:" and the process start time
# in clock ticks since boot (/proc/PID/stat field 22); elsewhere it is "ps:" and the start time
# that `ps -o lstart=` prints. A PID in the file is trusted (reported as running, signalled)
# only when that PID
#   1. is alive,
#   2. runs qwen-server: its program (argv[0]) is named qwen-server, or it is a Python
#      interpreter running a script named qwen-server (the console script), and
#   3. has the start token recorded beside it (a file written by an older start_server.sh,
#      with no token, is trusted on 1 and 2 alone).
# Otherwise the file is stale: start_server.sh replaces it, stop_server.sh removes it, and
# neither ever signals that PID.
# PIDFILE_NO_PROC=1 uses the ps fallback even where /proc exists (for tests).

# pidfile_path: where start_server.sh keeps the PID file ($RUN_DIR, default ./run).
pidfile_path() { printf '%s/qwen-server.pid\n' "${RUN_DIR:-run}"; }

_pidfile_use_proc() { [ "${PIDFILE_NO_PROC:-0}" != "1" ] && [ -r /proc/self/stat ]; }

# pid_start_token PID: print the start token of PID; fails when PID does not run.
pid_start_token() {
  local pid=$1 stat lstart
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  if _pidfile_use_proc; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    # Field 2 (the program name, in parentheses) may hold spaces: count from the last ")".
    stat=${stat##*) }
    local -a fields
    read -r -a fields <<<"$stat"
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    [ "${fields[0]:-}" != "Z" ] && [ -n "${fields[19]:-}" ] || return 1
    printf 'proc:%s\n' "${fields[19]}"
  else
    lstart=$(ps -o lstart= -p "$pid" 2>/dev/null) || return 1
    # shellcheck disable=SC2086  # word splitting squeezes the padding ps puts in dates
    set -- $lstart
    [ $# -gt 0 ] || return 1
    printf 'ps:%s\n' "$*"
  fi
}

# pid_runs_server PID: true when PID's program or script is named qwen-server.
pid_runs_server() {
  local pid=$1
  local -a argv=()
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  if _pidfile_use_proc; then
    [ -r "/proc/$pid/cmdline" ] || return 1
    mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
  else
    read -r -a argv <<<"$(ps -o args= -p "$pid" 2>/dev/null)" || true
  fi
  local prog=${argv[0]:-} script=${argv[1]:-}
  prog=${prog##*/}
  script=${script##*/}
  [ "$prog" = "qwen-server" ] && return 0
  case "$prog" in python | python[0-9]*) [ "$script" = "qwen-server" ] ;; *) return 1 ;; esac
}

# pid_is_server PID [TOKEN]: PID runs qwen-server and (when TOKEN is given) started as TOKEN.
pid_is_server() {
  local pid=$1 token=${2:-} now
  now=$(pid_start_token "$pid") || return 1
  pid_runs_server "$pid" || return 1
  [ -z "$token" ] || [ "$now" = "$token" ]
}

# pidfile_write FILE PID: record PID and its start token (atomically: write, then rename).
pidfile_write() {
  local file=$1 pid=$2 token
  token=$(pid_start_token "$pid") || token=""
  printf '%s %s\n' "$pid" "$token" >"$file.tmp.$$"
  mv -f "$file.tmp.$$" "$file"
}

# pidfile_read FILE: set PIDFILE_PID and PIDFILE_TOKEN from FILE; fails when FILE is missing or
# holds no PID.
pidfile_read() {
  local file=$1 line=""
  PIDFILE_PID=""
  PIDFILE_TOKEN=""
  [ -f "$file" ] || return 1
  IFS= read -r line <"$file" || [ -n "$line" ] || return 1
  read -r PIDFILE_PID PIDFILE_TOKEN <<<"$line" || true
  case "$PIDFILE_PID" in '' | *[!0-9]*) PIDFILE_PID=""; return 1 ;; esac
}

# pidfile_check FILE: succeed when FILE names a running qwen-server (see the rules above).
# Sets PIDFILE_PID, PIDFILE_TOKEN, PIDFILE_STATE (running | none | stale) and, when stale,
# PIDFILE_WHY (why the file is not trusted).
pidfile_check() {
  local file=$1 now
  PIDFILE_STATE=none
  PIDFILE_WHY=""
  if [ ! -e "$file" ]; then
    PIDFILE_PID=""
    PIDFILE_TOKEN=""
    return 1
  fi
  PIDFILE_STATE=stale
  if ! pidfile_read "$file"; then
    PIDFILE_WHY="it holds no PID"
    return 1
  fi
  if ! now=$(pid_start_token "$PIDFILE_PID"); then
    PIDFILE_WHY="pid $PIDFILE_PID no longer runs"
    return 1
  fi
  if ! pid_runs_server "$PIDFILE_PID"; then
    PIDFILE_WHY="pid $PIDFILE_PID now belongs to another program, not qwen-server"
    return 1
  fi
  if [ -n "$PIDFILE_TOKEN" ] && [ "$now" != "$PIDFILE_TOKEN" ]; then
    PIDFILE_WHY="pid $PIDFILE_PID is a qwen-server started later than the one recorded"
    return 1
  fi
  PIDFILE_STATE=running
}

# pid_terminate PID TOKEN SECONDS: SIGTERM PID, wait up to SECONDS for it to exit, then SIGKILL.
# Only ever signals PID while it is still the qwen-server that TOKEN names.
pid_terminate() {
  local pid=$1 token=$2 seconds=$3 deadline
  pid_is_server "$pid" "$token" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + seconds))
  while pid_is_server "$pid" "$token"; do
    if [ $SECONDS -ge "$deadline" ]; then
      echo "still running after ${seconds}s: sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while pid_is_server "$pid" "$token" && [ $SECONDS -lt "$deadline" ]; do sleep 0.2; done
      return 1
    fi
    sleep 0.2
  done
}
