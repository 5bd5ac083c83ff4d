#!/usr/bin/env bash
# pcaptool sidecar entrypoint: reads the reference sidecar's PCAP_* settings (same names,
# defaults and meanings; see docs/sidecar.md), validates all of them up front, then runs
#
#   capture ─┬─ rotate ── compress ──────────────────────┬── upload   (PCAP_TCPDUMP: .pcap)
#            └─ translate ─┬─ rotate --format ndjson ── compress ─┘         (PCAP_JSON: .json)
#                          └─ stdout, for Cloud Logging                     (PCAP_JSON_LOG)
#
# (translate under `pcaptool relay`, which restarts it when it dies), with `pcaptool
# healthcheck serve` on PCAP_HC_PORT beside it, and the whole pipeline
# under `pcaptool schedule` when PCAP_USE_CRON=true. SIGTERM stops capture first; the
# other stages see end of input, finish their last part and exit; then this script exits
# 0 (1 if a stage failed, naming it). Without PCAP_GCS_BUCKET parts go to GCS_MOUNT.
#
#   PCAP_IFACE=lo GCS_MOUNT=/tmp/pcap ./entrypoint.sh        # as root, on any Linux box
#
# Exit status: 0 ok, 1 a stage failed, 2 a bad setting (one line per bad value).
set -euo pipefail
shopt -s inherit_errexit

# The pcaptool command (tests run it from a checkout: PCAPTOOL="python3 -m pcaptool").
if [[ -n "${PCAPTOOL:-}" ]]; then
  read -r -a PCAPTOOL_CMD <<<"${PCAPTOOL}"
elif command -v pcaptool >/dev/null 2>&1; then
  PCAPTOOL_CMD=(pcaptool)
else
  PCAPTOOL_CMD=(python3 -m pcaptool)
fi
SELF="$(readlink -f "${BASH_SOURCE[0]}")"

# Bash cannot trap a signal that was ignored when it started, and a parent that is a
# non-interactive shell starts `cmd &` with SIGINT (and SIGQUIT) ignored: the stop traps
# below would be silently void and a SIGINT to the group would stop nothing. So start
# again with SIGINT and SIGTERM at their defaults (same pid, same arguments).
stop_signals_ignored() {
  local key value
  while read -r key value; do
    [[ "${key}" == SigIgn: ]] || continue
    (((16#${value} >> (2 - 1) & 1) || (16#${value} >> (15 - 1) & 1))) # SIGINT, SIGTERM
    return
  done </proc/$$/status
  return 1
}
if [[ -r /proc/$$/status ]] && stop_signals_ignored; then
  exec env --default-signal=INT,TERM bash "${SELF}" "$@"
fi

# ------------------------------------------------------------------ logging

json_str() { # a JSON string literal of $1
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  s="${s//$'\r'/\\r}"
  s="${s//$'\t'/\\t}"
  printf '"%s"' "${s}"
}

# log SEVERITY MESSAGE [KEY VALUE]... : one Cloud Logging JSON line on stderr.
log() {
  local severity="$1" message="$2" extra=""
  shift 2
  while [[ $# -ge 2 ]]; do
    extra+=",$(json_str "$1"):$(json_str "$2")"
    shift 2
  done
  printf '{"severity":"%s","message":%s,"time":"%s","component":"sidecar"%s}\n' \
    "${severity}" "$(json_str "${message}")" "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "${extra}" >&2
}

# ------------------------------------------------------------------ settings

ERRORS=()
bad() { ERRORS+=("$1"); }

# Go's strconv.ParseBool, which the reference's flags use.
parse_bool() { # NAME DEFAULT -> sets the variable NAME to true/false
  local name="$1" value="${!1:-$2}"
  case "${value}" in
    1 | t | T | TRUE | true | True) printf -v "${name}" true ;;
    0 | f | F | FALSE | false | False) printf -v "${name}" false ;;
    *)
      bad "${name}='${value}' is not a boolean: use true or false"
      printf -v "${name}" '%s' "$2" # judged as its default: no knock-on errors
      ;;
  esac
}

parse_uint() { # NAME DEFAULT MIN MAX
  local name="$1" value="${!1:-$2}" min="$3" max="$4"
  if [[ ! "${value}" =~ ^[0-9]+$ ]] || ((10#${value} < min || 10#${value} > max)); then
    bad "${name}='${value}' must be a whole number from ${min} to ${max}"
    printf -v "${name}" '%s' "$2"
  else
    printf -v "${name}" '%d' "$((10#${value}))"
  fi
}

read_settings() {
  PCAP_IFACE="${PCAP_IFACE:-eth}"
  PCAP_GCS_BUCKET="${PCAP_GCS_BUCKET:-}"
  GCS_MOUNT="${GCS_MOUNT:-/pcap}"
  FILE_EXT_GIVEN="${PCAP_FILE_EXT:-}"
  PCAP_FILE_EXT="${PCAP_FILE_EXT:-pcap}"
  PCAP_CRON_EXP="${PCAP_CRON_EXP:-}"
  PCAP_TIMEZONE="${PCAP_TIMEZONE:-UTC}"
  parse_uint PCAP_SNAPSHOT_LENGTH 0 0 262144
  parse_uint PCAP_ROTATE_SECS 60 1 86400
  parse_uint PCAP_HC_PORT 12345 1 65535
  parse_uint PCAP_TIMEOUT_SECS 0 0 31536000
  parse_bool PCAP_COMPRESS true
  parse_bool PCAP_TCPDUMP true
  parse_bool PCAP_JSON false
  parse_bool PCAP_JSON_LOG false
  parse_bool PCAP_FLOWS false # translate reads it: connection records too (docs/expert.md)
  export PCAP_FLOWS
  parse_bool PCAP_TCP_ANALYSIS true # translate reads it: tcp.analysis (docs/expert.md)
  export PCAP_TCP_ANALYSIS
  parse_uint PCAP_DNS_TIMEOUT 5 1 3600 # translate reads it: --dns-timeout
  export PCAP_DNS_TIMEOUT
  parse_bool PCAP_ORDERED false
  parse_bool PCAP_USE_CRON false
  parse_bool PCAP_COMPAT false
  parse_bool PCAP_GAE false
  parse_bool PCAP_DEBUG false # every stage logs its start, arguments and resource use
  read_platform_settings
  check_iface
  check_destination
  if [[ "${PCAP_TCPDUMP}" == false && "${PCAP_JSON}" == false && "${PCAP_JSON_LOG}" == false &&
    -z "${PCAP_POI_TARGET:-}" ]]; then
    bad "PCAP_TCPDUMP, PCAP_JSON and PCAP_JSON_LOG are all false and no PCAP_POI_TARGET: nothing would be captured"
  fi
  if [[ "${PCAP_USE_CRON}" == true && -z "${PCAP_CRON_EXP}" ]]; then
    bad "PCAP_USE_CRON=true needs PCAP_CRON_EXP (e.g. '0 */10 * * * *': 6 fields, seconds first)"
  fi
  # The reference's PCAP_SNAPSHOT_LENGTH=0 is tcpdump's "-s 0": the default 262144 bytes.
  SNAPLEN="${PCAP_SNAPSHOT_LENGTH}"
  ((SNAPLEN > 0)) || SNAPLEN=262144
  # translate's bounded backlog (beyond it records are shed, never pcap packets)
  PCAP_JSON_BACKLOG="${PCAP_JSON_BACKLOG:-32M}"
  [[ "${PCAP_JSON_BACKLOG}" =~ ^[1-9][0-9]*[KMG]?$ ]] ||
    bad "PCAP_JSON_BACKLOG='${PCAP_JSON_BACKLOG}' must be a size such as 32M, 512K or 1G"
  PCAP_FILTER="${PCAP_FILTER:-}"
  # PCAP-over-IP: the live capture also streamed to this receiver (host:port), if set
  PCAP_POI_TARGET="${PCAP_POI_TARGET:-}"
  [[ -z "${PCAP_POI_TARGET}" || "${PCAP_POI_TARGET}" =~ ^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$ ]] ||
    bad "PCAP_POI_TARGET='${PCAP_POI_TARGET}' must be HOST:PORT (e.g. arkime.internal:57012)"
  PCAP_POI_BACKLOG="${PCAP_POI_BACKLOG:-16M}"
  [[ "${PCAP_POI_BACKLOG}" =~ ^[1-9][0-9]*[KMG]?$ ]] ||
    bad "PCAP_POI_BACKLOG='${PCAP_POI_BACKLOG}' must be a size such as 16M, 512K or 1G"
  # pcaptool's own connections (uploads, metadata) bind these local ports; capture always
  # leaves them out (docs/sidecar.md). capture --print-filter validates the value.
  export PCAP_SELF_PORTS="${PCAP_SELF_PORTS:-61000-61099}"
  [[ "${PCAP_FILTER}" != "DISABLED" ]] || PCAP_FILTER=""

  # The hierarchy's INSTANCE_STARTUP_TIMESTAMP, fixed once (as the reference does at
  # init), so every upload process of this instance, in every scheduled run, shares it.
  export INSTANCE_STARTUP_TIMESTAMP="${INSTANCE_STARTUP_TIMESTAMP:-$(date -u +%Y/%m/%d/%H-%M)}"
  # The commands read these themselves (each option has its PCAP_* env var); the
  # normalised values are what they see.
  export PCAP_COMPAT PCAP_COMPRESS PCAP_ORDERED PCAP_FILTER PCAP_ROTATE_SECS PCAP_TIMEZONE \
    PCAP_JSON_BACKLOG PCAP_POI_TARGET PCAP_POI_BACKLOG
}

# Record detail, execution environment and instance id (object names, labels).
read_platform_settings() {
  PCAP_VERBOSITY="${PCAP_VERBOSITY:-DEBUG}" # translate reads it: record detail
  PCAP_VERBOSITY="${PCAP_VERBOSITY^^}"
  [[ "${PCAP_VERBOSITY}" == INFO || "${PCAP_VERBOSITY}" == DEBUG ]] ||
    bad "PCAP_VERBOSITY='${PCAP_VERBOSITY}' must be INFO or DEBUG"
  PCAP_EXEC_ENV="${PCAP_EXEC_ENV:-}" # object names (sidecar/metadata.py); PCAP_GAE=true: gae
  PCAP_EXEC_ENV="${PCAP_EXEC_ENV,,}"
  [[ -n "${PCAP_EXEC_ENV}" || "${PCAP_GAE}" != true ]] || PCAP_EXEC_ENV=gae
  case "${PCAP_EXEC_ENV:-run}" in
    run | gke) ;;
    gae) PCAP_GAE=true ;;
    *) bad "PCAP_EXEC_ENV='${PCAP_EXEC_ENV}' must be run, gae or gke" ;;
  esac
  PCAP_INSTANCE_ID="${PCAP_INSTANCE_ID:-}"
  [[ -z "${PCAP_INSTANCE_ID}" || "${PCAP_INSTANCE_ID}" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] ||
    bad "PCAP_INSTANCE_ID='${PCAP_INSTANCE_ID}' must be letters, digits, '.', '_' or '-' (up to 128)"
  export PCAP_DEBUG PCAP_VERBOSITY PCAP_EXEC_ENV PCAP_INSTANCE_ID
}

# PCAP_IFACE names an interface prefix that matches (as capture selects them).
check_iface() {
  if [[ ! "${PCAP_IFACE}" =~ ^[A-Za-z0-9._:@-]{1,15}$ ]]; then
    bad "PCAP_IFACE='${PCAP_IFACE}' is not an interface name prefix (e.g. eth, ens, lo, any)"
  elif [[ "${PCAP_IFACE}" != any && -d /sys/class/net ]]; then
    local names=() n
    for n in /sys/class/net/*; do names+=("${n##*/}"); done
    # As capture selects them (and the reference): [ipvlan-]PREFIX then a digit, or the name.
    for n in "${names[@]}"; do
      [[ "${n}" != "${PCAP_IFACE}" && ! "${n}" =~ ^(ipvlan-)?"${PCAP_IFACE}"[0-9] ]] || break
      n=""
    done
    [[ -n "${n}" ]] ||
      bad "PCAP_IFACE='${PCAP_IFACE}' matches no interface (there are: ${names[*]})"
  fi
}

# Where parts go: file extension, GCS_MOUNT, the bucket's name.
check_destination() {
  [[ "${PCAP_FILE_EXT}" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$ ]] ||
    bad "PCAP_FILE_EXT='${PCAP_FILE_EXT}' must be letters/digits, e.g. pcap (no dot, no slash)"
  [[ "${GCS_MOUNT}" == /* && "${GCS_MOUNT}" != "/" ]] ||
    bad "GCS_MOUNT='${GCS_MOUNT}' must be an absolute directory path other than /"
  # Bucket names: https://cloud.google.com/storage/docs/buckets#naming
  if [[ -n "${PCAP_GCS_BUCKET}" ]]; then
    PCAP_GCS_BUCKET="${PCAP_GCS_BUCKET#gs://}"
    PCAP_GCS_BUCKET="${PCAP_GCS_BUCKET%/}"
    [[ "${PCAP_GCS_BUCKET}" =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]] ||
      bad "PCAP_GCS_BUCKET='${PCAP_GCS_BUCKET}' is not a Cloud Storage bucket name"
  fi
}

# Values only pcaptool can judge: the capture filter (simple filters, BPF syntax) and
# the cron expression/zone. Each prints its own one-line error.
validate_with_pcaptool() {
  local out
  if ! out="$("${PCAPTOOL_CMD[@]}" capture --print-filter -i "${PCAP_IFACE}" --snaplen "${SNAPLEN}" --health-port "${PCAP_HC_PORT}" 2>&1)"; then
    bad "capture settings: ${out##*error: }"
  else
    FILTER_SHOWN="${out}"
  fi
  # The interfaces capture resolves PCAP_IFACE to: translate names them in pcap.iface (a
  # pcap stream names none) with their index and addresses.
  local -a ifaces=()
  mapfile -t ifaces < <("${PCAPTOOL_CMD[@]}" capture --list-interfaces -i "${PCAP_IFACE}" 2>/dev/null)
  PCAPTOOL_CAPTURE_IFACES="$(IFS=,; echo "${ifaces[*]}")"
  export PCAPTOOL_CAPTURE_IFACES
  if [[ "${PCAP_USE_CRON}" == true && -n "${PCAP_CRON_EXP}" ]]; then
    if ! out="$("${PCAPTOOL_CMD[@]}" schedule --check --cron "${PCAP_CRON_EXP}" --tz "${PCAP_TIMEZONE}" 2>&1)"; then
      bad "schedule settings: ${out##*error: }"
    fi
  fi
}

fail_on_errors() {
  local e
  if [[ ${#ERRORS[@]} -gt 0 ]]; then
    for e in "${ERRORS[@]}"; do
      printf 'pcaptool-sidecar: error: %s\n' "${e}" >&2
    done
    exit 2
  fi
}

# Cloud Logging links a record to Cloud Trace only with "projects/PROJECT/traces/ID", and
# Cloud Run does not set the project in the environment: ask the metadata server once
# (GCE_METADATA_HOST honoured, as Google's libraries do) so translate can qualify traces.
discover_project() {
  [[ -z "${PROJECT_ID:-}" && -z "${GOOGLE_CLOUD_PROJECT:-}" ]] || return 0
  local project
  project="$(python3 - <<'PY' 2>/dev/null || true
import os, urllib.request

host = os.environ.get("GCE_METADATA_HOST") or "metadata.google.internal"
req = urllib.request.Request(
    f"http://{host}/computeMetadata/v1/project/project-id", headers={"Metadata-Flavor": "Google"}
)
try:
    with urllib.request.urlopen(req, timeout=1) as resp:
        if resp.status == 200 and resp.headers.get("Metadata-Flavor") == "Google":
            print(resp.read().decode().strip())
except OSError:
    pass
PY
  )"
  if [[ "${project}" =~ ^[a-z][a-z0-9.:-]{3,62}$ ]]; then
    export GOOGLE_CLOUD_PROJECT="${project}"
  fi
}

# App Engine Flex (PCAP_GAE): as the reference does, read the GAE_*, GOOGLE_* and
# GCLOUD_* variables of the app's container (`gaeapp`) through the Docker socket mounted
# into this one, so the parts are named after the app's service and version.
gae_environment() {
  local sock="${PCAP_GAE_DOCKER_SOCK:-/docker.sock}" line name
  if [[ ! -S "${sock}" ]]; then
    log WARNING "PCAP_GAE=true but ${sock} is not a socket (mount /var/run/docker.sock there): GAE_* come from this container's environment"
    return 0
  fi
  while IFS= read -r line; do
    [[ "${line}" =~ ^((GAE|GOOGLE|GCLOUD)_[A-Za-z0-9_]*)= ]] || continue
    name="${BASH_REMATCH[1]}"
    [[ -n "${!name:-}" ]] || export "${line?}"
  done < <(python3 - "${sock}" <<'PY'
import http.client, json, socket, sys

class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(5)
        self.sock.connect(sys.argv[1])

try:
    conn = UnixConnection("docker", timeout=5)
    conn.request("GET", "/containers/gaeapp/json")
    resp = conn.getresponse()
    if resp.status == 200:
        for item in json.loads(resp.read()).get("Config", {}).get("Env") or []:
            if "\n" not in item:
                print(item)
    else:
        print(f"docker socket: container gaeapp: HTTP {resp.status}", file=sys.stderr)
except (OSError, ValueError) as exc:
    print(f"docker socket: {exc}", file=sys.stderr)
PY
  )
  log INFO "App Engine Flex: service ${GAE_SERVICE:-?}, version ${GAE_VERSION:-?}" \
    service "${GAE_SERVICE:-}" version "${GAE_VERSION:-}"
}

# ------------------------------------------------------------------ one capture run

# A stage pipeline "a | b | c" run in the background; its failures are reported by name.
BRANCH_STATUS=()
run_branch() { # NAME STAGE-NAMES... : runs the function branch_NAME
  local name="$1"
  shift
  local stages=("$@")
  set +e
  "branch_${name}"
  set -e
  local statuses=("${BRANCH_STATUS[@]}") i failed=0
  for i in "${!statuses[@]}"; do
    if [[ "${statuses[$i]}" != 0 ]]; then
      log ERROR "${name} pipeline: stage '${stages[$i]:-?}' exited with status ${statuses[$i]}" \
        branch "${name}" stage "${stages[$i]:-?}" exit_status "${statuses[$i]}"
      failed=1
    fi
  done
  return "${failed}"
}

compress_stage() {
  if [[ "${PCAP_COMPRESS}" == true ]]; then
    "${PCAPTOOL_CMD[@]}" compress
  else
    cat
  fi
}

# The branches end in fd 4: the one uploader's input (a FIFO), shared so there is one
# upload process, one "PCAP files available at" line and one pool of parallel uploads.
branch_pcap() {
  # Parts are named after PCAP_IFACE (the pcap/json parts of one moment share a name) and
  # take pcap or pcapng as their content unless PCAP_FILE_EXT says otherwise.
  local -a ext=()
  [[ -z "${FILE_EXT_GIVEN}" ]] || ext=(--ext "${PCAP_FILE_EXT}")
  env -u PCAP_FILE_EXT "${PCAPTOOL_CMD[@]}" rotate --dir "${PARTS_TMP}/pcap" --iface "${PCAP_IFACE}" \
    --every "${PCAP_ROTATE_SECS}" "${ext[@]}" <"${RUN_DIR}/pcap.fifo" |
    compress_stage >&4
  BRANCH_STATUS=("${PIPESTATUS[@]}")
}

# translate under `pcaptool relay`: a translate that dies (a crash, an OOM kill) is
# restarted with backoff, gets the stream's header and goes on at the next packet; each
# gap is an ERROR (log line and record). The relay reads the FIFO at once (its backlog:
# PCAP_JSON_BACKLOG), so the pcap branch never waits for JSON.
translate_stage() {
  "${PCAPTOOL_CMD[@]}" relay --name translate -- "${PCAPTOOL_CMD[@]}" translate - <"${RUN_DIR}/json.fifo"
}

json_rotate_stage() {
  "${PCAPTOOL_CMD[@]}" rotate --format ndjson --ext json --iface "${PCAP_IFACE}" \
    --dir "${PARTS_TMP}/json" --every "${PCAP_ROTATE_SECS}"
}

branch_json() {
  if [[ "${PCAP_JSON}" == true && "${PCAP_JSON_LOG}" == true ]]; then
    # Lines to stdout (Cloud Logging) and to NDJSON parts; `tee -p` keeps feeding the
    # parts if stdout goes away. (This runs in its own subshell: fd 3 is its stdout.)
    exec 3>&1
    translate_stage | tee -p /dev/fd/3 | json_rotate_stage | compress_stage >&4
    BRANCH_STATUS=("${PIPESTATUS[@]}")
  elif [[ "${PCAP_JSON}" == true ]]; then
    translate_stage | json_rotate_stage | compress_stage >&4
    BRANCH_STATUS=("${PIPESTATUS[@]}")
  else
    translate_stage 4>&-
    BRANCH_STATUS=("$?")
  fi
}

# PCAP-over-IP: the capture streamed to PCAP_POI_TARGET; `stream` reads its input at once
# into a bounded backlog (PCAP_POI_BACKLOG) and drops whole packets, so it never slows tee.
branch_poi() {
  "${PCAPTOOL_CMD[@]}" stream <"${RUN_DIR}/poi.fifo" 4>&-
  BRANCH_STATUS=("$?")
}

# The one uploader, reading part paths on stdin (the upload FIFO). Killed (an OOM kill,
# SIGKILL: exit status > 128), it is restarted with backoff; this loop keeps the FIFO's
# read end open meanwhile, so no branch sees a closed pipe. A restart first sweeps the
# parts directories (what the killed uploader had read but not uploaded; a temporary
# part no rotate holds is recovered too), then reads on, skipping paths the sweep took.
# Failed otherwise (exit 1), it is not restarted: see upload_failed.
supervise_upload() {
  local status delay=1 restarted=0 glob='*' dir
  [[ "${PCAP_COMPRESS}" != true ]] || glob='*.gz' # raw parts are compress's until then
  while :; do
    status=0
    if ((restarted)); then
      for dir in "${PARTS_TMP}/pcap" "${PARTS_TMP}/json"; do
        "${PCAPTOOL_CMD[@]}" upload "${UPLOAD_ARGS[@]}" --sweep "${dir}" --glob "${glob}" ||
          log ERROR "sweep of ${dir} after the upload restart failed" stage upload
      done
      existing_paths | "${PCAPTOOL_CMD[@]}" upload "${UPLOAD_ARGS[@]}" || status=$?
    else
      "${PCAPTOOL_CMD[@]}" upload "${UPLOAD_ARGS[@]}" || status=$?
    fi
    ((status > 128)) || break
    log ERROR "upload was killed (exit status ${status}): restarting it in ${delay} s; it sweeps what was left" \
      stage upload exit_status "${status}"
    sleep "${delay}"
    ((delay >= 30)) || delay=$((delay * 2))
    restarted=1
  done
  ((status == 0)) || upload_failed "${status}"
  return "${status}"
}

# Nothing uploads any more: the health port closes at once (the ready file goes; capture
# would only remove it as it ends), capture is stopped through this run's stop trap, and
# the FIFO is read to its end so every branch finishes its last part, which stays on disk.
upload_failed() { # STATUS
  rm -f "${READY_FILE}"
  log ERROR "upload failed (exit status $1): health port closed, capture stopped; parts not uploaded stay in ${PARTS_TMP} for \`pcaptool upload --sweep\`" \
    stage upload exit_status "$1"
  kill -TERM "${RUNNER_PID}" 2>/dev/null || true
  cat >/dev/null
}

existing_paths() { # the paths on stdin that are still files
  local path
  while IFS= read -r path; do
    [[ ! -f "${path}" ]] || printf '%s\n' "${path}"
  done
}

# Waits for a background process of this shell (so never in a $(...) subshell); a
# trapped signal interrupts `wait` (status > 128 while the process is still there), so
# wait again. Sets WAIT_STATUS to its exit status.
WAIT_STATUS=0
wait_for_exit() {
  local pid="$1"
  while :; do
    WAIT_STATUS=0
    wait "${pid}" || WAIT_STATUS=$?
    if ((WAIT_STATUS > 128)) && kill -0 "${pid}" 2>/dev/null; then
      continue
    fi
    return 0
  done
}

# The stages of one run, each `start_*` adding its pid to run_pipeline's `pids`.

start_upload() { # fd 4: where the branches write the paths of their finished parts
  if [[ "${PCAP_TCPDUMP}" == false && "${PCAP_JSON}" == false ]]; then
    exec 4>/dev/null # nothing to upload (JSON to stdout only)
    return
  fi
  mkfifo "${RUN_DIR}/upload.fifo"
  # The URLs upload prints are for pipes; its JSON log lines (stderr) say it all.
  supervise_upload <"${RUN_DIR}/upload.fifo" >/dev/null &
  pids[upload]=$!
  # This shell keeps a writer open until every branch is done: upload sees end of
  # input only then, however the branches finish.
  exec 4>"${RUN_DIR}/upload.fifo"
}

start_branches() { # each reads capture's stream from a FIFO, listed in CAPTURE_OUT
  CAPTURE_OUT=()
  if [[ "${PCAP_TCPDUMP}" == true ]]; then
    mkfifo "${RUN_DIR}/pcap.fifo"
    run_branch pcap rotate compress &
    pids[pcap]=$!
    CAPTURE_OUT+=("${RUN_DIR}/pcap.fifo")
  fi
  if [[ "${PCAP_JSON}" == true || "${PCAP_JSON_LOG}" == true ]]; then
    mkfifo "${RUN_DIR}/json.fifo"
    if [[ "${PCAP_JSON}" == true && "${PCAP_JSON_LOG}" == true ]]; then
      run_branch json translate tee rotate compress &
    elif [[ "${PCAP_JSON}" == true ]]; then
      run_branch json translate rotate compress &
    else
      run_branch json translate &
    fi
    pids[json]=$!
    CAPTURE_OUT+=("${RUN_DIR}/json.fifo")
  fi
  if [[ -n "${PCAP_POI_TARGET}" ]]; then
    mkfifo "${RUN_DIR}/poi.fifo"
    run_branch poi stream &
    pids[poi]=$!
    CAPTURE_OUT+=("${RUN_DIR}/poi.fifo")
  fi
}

start_capture() { # DURATION READY-FILE
  local -a args=(capture -i "${PCAP_IFACE}" --snaplen "${SNAPLEN}" -w -
    --duration "$1" --ready-file "$2" --health-port "${PCAP_HC_PORT}")
  [[ -z "${PCAP_FILTER}" ]] || args+=(--filter "${PCAP_FILTER}")
  if [[ ${#CAPTURE_OUT[@]} -ge 2 ]]; then
    mkfifo "${RUN_DIR}/capture.fifo"
    # One capture, two or three consumers; -p: a consumer that dies does not stop the others.
    tee -p "${CAPTURE_OUT[@]:1}" <"${RUN_DIR}/capture.fifo" >"${CAPTURE_OUT[0]}" 4>&- &
    pids[tee]=$!
    "${PCAPTOOL_CMD[@]}" "${args[@]}" >"${RUN_DIR}/capture.fifo" 4>&- &
  else
    "${PCAPTOOL_CMD[@]}" "${args[@]}" >"${CAPTURE_OUT[0]}" 4>&- &
  fi
  pids[capture]=$!
}

# Capture stops first; every other stage ends on end of input.
stop_capture() {
  CAPTURE_STOPPED=1
  log INFO "stopping capture (pid ${pids[capture]}); the other stages drain"
  kill -TERM "${pids[capture]}" 2>/dev/null || true
}

wait_for_stages() { # in order, so upload's input ends only once every branch is done
  local name status failed=0
  for name in capture tee pcap json upload poi; do # the stream never holds up the uploads
    [[ -n "${pids[${name}]:-}" ]] || continue
    [[ "${name}" != upload ]] || exec 4>&- # the branches are done: upload's input ends
    wait_for_exit "${pids[${name}]}"
    status="${WAIT_STATUS}"
    # Stopped while still starting (before its own handler was in place: slow start
    # under load): SIGTERM's default action, with nothing captured yet to lose.
    [[ "${name}" != capture || "${CAPTURE_STOPPED}" == 0 || "${status}" != 143 ]] || status=0
    if ((status != 0)); then
      failed=1
      # Branches and upload name their failed stage themselves.
      [[ "${name}" == pcap || "${name}" == json || "${name}" == poi || "${name}" == upload ]] ||
        log ERROR "${name} exited with status ${status}" stage "${name}" exit_status "${status}"
    fi
  done
  return "${failed}"
}

# Runs capture and its consumers once; SIGTERM/SIGINT stop capture, the rest drains.
run_pipeline() { # DURATION READY-FILE
  # Until capture runs, a stop request is only noted (and honoured once it does).
  local stop_requested=0
  trap 'stop_requested=1' TERM INT
  RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pcaptool-run.XXXXXX")"
  READY_FILE="$2"
  RUNNER_PID="${BASHPID}" # what a failed upload signals to stop this run
  CAPTURE_STOPPED=0
  mkdir -p "${PARTS_TMP}/pcap" "${PARTS_TMP}/json"
  local -A pids=()
  start_upload
  start_branches
  start_capture "$1" "$2"
  trap stop_capture TERM INT
  ((stop_requested == 0)) || stop_capture
  local failed=0
  wait_for_stages || failed=1
  exec 4>&-
  trap - TERM INT
  rm -rf "${RUN_DIR}"
  return "${failed}"
}

# ------------------------------------------------------------------ main

set_destination() { # where parts wait (PARTS_TMP) and where upload sends them
  PARTS_TMP="${GCS_MOUNT}-tmp"
  if [[ -n "${PCAP_GCS_BUCKET}" ]]; then
    UPLOAD_ARGS=(--bucket "${PCAP_GCS_BUCKET}")
    DESTINATION="gs://${PCAP_GCS_BUCKET}"
  else
    UPLOAD_ARGS=(--dest "${GCS_MOUNT}")
    DESTINATION="${GCS_MOUNT}"
    mkdir -p "${GCS_MOUNT}"
  fi
  mkdir -p "${PARTS_TMP}"
  export PARTS_TMP
  # Everything waiting in PARTS_TMP counts against PCAP_SPOOL_BYTES (memory on Cloud Run).
  UPLOAD_ARGS+=(--spool-dir "${PARTS_TMP}")
}

# The health port and the runner (the pipeline, or the scheduler of scheduled runs), each
# in a process group of its own (set -m): a signal to this script's group (`kill --
# -PGID`, Ctrl-C, a runtime signalling the group) reaches this shell alone, which stops
# capture first and lets every other stage drain, just as for a SIGTERM to this script;
# no stage is signalled beside it mid-write. Sets HC_PID and RUNNER_PID.
start_runner() { # READY-FILE
  local ready_file="$1"
  set -m
  PCAP_READY_FILE="${ready_file}" "${PCAPTOOL_CMD[@]}" healthcheck serve --port "${PCAP_HC_PORT}" &
  HC_PID=$!
  if [[ "${PCAP_USE_CRON}" == true ]]; then
    # Ready means "the scheduler is running": the app must not wait for the first
    # scheduled capture. Each run's capture signals its own, private ready file.
    "${PCAPTOOL_CMD[@]}" schedule --cron "${PCAP_CRON_EXP}" --tz "${PCAP_TIMEZONE}" \
      --timeout "${PCAP_TIMEOUT_SECS}" -- "${SELF}" __run_once "${PARTS_TMP}/.capture-ready" &
    RUNNER_PID=$!
    # Written whole (tmp + rename), with the scheduler's pid: if it dies, not ready.
    printf '{"pid": %d, "scheduler": true}\n' "${RUNNER_PID}" >"${ready_file}.tmp"
    mv -f "${ready_file}.tmp" "${ready_file}"
  else
    run_pipeline "${PCAP_TIMEOUT_SECS}" "${ready_file}" &
    RUNNER_PID=$!
  fi
  set +m
}

stop_runner() {
  STOPPING=1
  kill -TERM "${RUNNER_PID}" 2>/dev/null || true
}

# After the runner: as a container's main process, stay up until the platform stops us
# (exiting would restart the instance); then stop the health port. Exits.
finish() { # RUNNER-STATUS
  local status="$1"
  # Capture ended on its own (PCAP_TIMEOUT_SECS without cron).
  if ((STOPPING == 0 && status == 0 && $$ == 1)); then
    log NOTICE "capture finished (exit status ${status}); idle until SIGTERM"
    sleep infinity &
    trap 'kill -TERM $! 2>/dev/null || true' TERM INT
    wait $! || true
  fi
  if ! kill -TERM "${HC_PID}" 2>/dev/null; then
    # It ended before we asked: most likely PCAP_HC_PORT was taken.
    wait_for_exit "${HC_PID}"
    log ERROR "healthcheck (port ${PCAP_HC_PORT}) exited early with status ${WAIT_STATUS}" \
      stage healthcheck exit_status "${WAIT_STATUS}"
    ((status != 0)) || status=1
  fi
  wait "${HC_PID}" 2>/dev/null || true
  if ((status != 0)); then
    log ERROR "pcaptool sidecar finished with failures (exit status ${status})" exit_status "${status}"
    exit 1
  fi
  log NOTICE "pcaptool sidecar finished"
  exit 0
}

main() {
  read_settings
  fail_on_errors
  if [[ "${1:-}" == "__run_once" ]]; then
    # One scheduled run (pcaptool schedule runs this; the settings were checked when the
    # sidecar started); the scheduler bounds it.
    set_destination
    run_pipeline 0 "${2}"
    return
  fi
  validate_with_pcaptool
  fail_on_errors
  [[ "${PCAP_GAE}" != true ]] || gae_environment
  discover_project
  set_destination

  # Parts must be able to land before the sidecar says it is ready: a read-only or
  # unwritable GCS_MOUNT, a missing bucket or no credentials end it here, with one line.
  "${PCAPTOOL_CMD[@]}" upload "${UPLOAD_ARGS[@]}" --check >/dev/null || exit 1

  STOPPING=0
  trap 'STOPPING=1' TERM INT
  local ready_file="${PCAP_READY_FILE:-/tmp/pcaptool/ready}"
  mkdir -p "$(dirname "${ready_file}")"
  rm -f "${ready_file}"
  log NOTICE "pcaptool sidecar starting" iface "${PCAP_IFACE}" filter "${FILTER_SHOWN:-}" \
    destination "${DESTINATION}" \
    cron "${PCAP_USE_CRON}" pcap "${PCAP_TCPDUMP}" json "${PCAP_JSON}" json_log "${PCAP_JSON_LOG}"
  start_runner "${ready_file}"
  trap stop_runner TERM INT
  ((STOPPING == 0)) || stop_runner
  wait_for_exit "${RUNNER_PID}"
  local status="${WAIT_STATUS}"
  # Killed by the stop before its own trap was in place (it had started nothing yet).
  ((STOPPING == 0 || status != 143)) || status=0
  rm -f "${ready_file}"
  finish "${status}"
}

main "$@"
