# Shared shell helpers for scripts/test and scripts/bench. Sourced, not run.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mFAILED: %s\033[0m\n' "$*" >&2; exit 1; }

# A free TCP port, below the kernel's ephemeral range (32768+) so that no outgoing connection
# (load generators, other tests) can be holding it, and free on every address (servers that bind
# the wildcard). A tiny race with other processes remains possible.
free_port() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    p = random.randrange(20000, 32000)
    try:
        for addr in ("0.0.0.0", "127.0.0.1"):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, p)); s.close()
        print(p); break
    except OSError:
        continue
else:
    raise SystemExit("no free port found in 20000-32000")
PY
}

# Waits until host:port accepts TCP connections, or fails after $2 seconds (default 20).
wait_port() {
  local port=$1 limit=${2:-20} i
  for ((i = 0; i < limit * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Installs the Debian package $1 if the command $2 is missing.
need_apt() {
  local pkg=$1 cmd=$2
  if ! command -v "$cmd" >/dev/null 2>&1; then
    say "installing $pkg (Debian package; $cmd is missing)"
    if [ -z "${APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
      APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null || die "apt-get install $pkg failed"
    command -v "$cmd" >/dev/null 2>&1 || die "$pkg installed but $cmd is still missing"
  fi
}

# need_npm_dir DIR WHAT: Node.js and npm (Debian packages if missing), then `npm ci` in DIR (pinned
# by its package-lock.json) unless that lock file is already what is installed.
need_npm_dir() {
  local dir=$1 what=$2 stamp=$1/node_modules/.installed-lock
  command -v node >/dev/null 2>&1 || need_apt nodejs node
  command -v npm >/dev/null 2>&1 || need_apt npm npm
  if ! cmp -s "$dir/package-lock.json" "$stamp" 2>/dev/null; then
    say "installing $what (npm ci, pinned by ${dir#$ROOT/}/package-lock.json)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $dir failed"
    cp "$dir/package-lock.json" "$stamp"
  fi
}

# Installs the pinned Node.js test services (dynalite) from tests/node/package-lock.json.
need_node_services() {
  local dir=$ROOT/tests/node
  need_npm_dir "$dir" dynalite
  DYNALITE_CLI=$dir/node_modules/dynalite/cli.js
  [ -f "$DYNALITE_CLI" ] || die "dynalite is not installed at $DYNALITE_CLI"
}

# Processes this script started; stop_started kills exactly these (never anything else).
STARTED_PIDS=()
stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# start_redis PORT DIR [extra redis-server args...]: a throwaway redis-server, no persistence.
start_redis() {
  local port=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize no --logfile "$dir/redis.log" "$@" &
  STARTED_PIDS+=($!)
  if ! wait_port "$port" 30; then
    tail -20 "$dir/redis.log" >&2 || true
    die "redis-server on port $port did not start within 30 s"
  fi
}

# start_dynalite PORT DIR: dynalite keeping its data in DIR.
start_dynalite() {
  local port=$1 dir=$2
  mkdir -p "$dir"
  node "$DYNALITE_CLI" --host 127.0.0.1 --port "$port" --path "$dir/data" >"$dir/dynalite.log" 2>&1 &
  STARTED_PIDS+=($!)
  # Node starts slowly on a loaded 2-core machine: allow a minute.
  if ! wait_port "$port" 60; then
    tail -20 "$dir/dynalite.log" >&2 || true
    die "dynalite on port $port did not start within 60 s"
  fi
}

# Installs what the browser test needs: Debian's chromium, and playwright-core from npm (pinned by
# tests/browser/package-lock.json). Sets CHROMIUM_PATH unless already set.
need_browser_test() {
  need_apt chromium chromium
  local dir=$ROOT/tests/browser
  need_npm_dir "$dir" playwright-core
  [ -f "$dir/node_modules/playwright-core/package.json" ] || die "playwright-core is not installed in $dir/node_modules"
  CHROMIUM_PATH=${CHROMIUM_PATH:-$(command -v chromium)}
  export CHROMIUM_PATH
}
