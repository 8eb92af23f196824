#!/bin/bash
# Cold installs, side by side: an empty store and an empty uv cache, downloads
# from PyPI included, the tier's lock given (--frozen), interleaved run by run.
#
#   benches/cold.sh DIR RUNS TIER [LABEL]
#
# DIR is on the filesystem under test (e.g. a loop-mounted ext4 or XFS image);
# everything (stores, caches, venvs) goes under it. Mount an image with
# `-o loop,discard`: without discard, blocks freed inside it stay allocated in
# the image file, which grows by several GB per run of tekton-ml until the
# disk under it is full (that stopped a session's runs). Needs uv, Python 3.11 and
# the lock pylock.TIER.toml in the current folder (`tstore lock TIER`).
# TSTORE is the binary to measure (default: target/release/tstore);
# TSTORE_BEFORE, when set, is measured too as `before`. APPROACHES picks among
#   before  TSTORE_BEFORE, bytecode on (the default)
#   tstore  TSTORE, bytecode on
#   nobc    TSTORE with compile-bytecode = false
#   lazy    TSTORE with compile-bytecode = "lazy" (nothing compiled at install)
#   uv      `uv venv --python 3.11` + `uv pip sync pylock.TIER.toml`
#   uvbc    the same with --compile-bytecode
# MIRROR=1 puts a caching nginx on 127.0.0.1 in front of files.pythonhosted.org
# and points the lock's URLs at it; one uv install (not measured) fills its
# cache, so every measured run downloads the same bytes over loopback and the
# network's ups and downs leave the comparison. Needs nginx.
# Prints "label filesystem tier approach run wall-seconds usable-seconds" per
# run; tstore's usable figure is its own `usable after` (when the tier's path
# points at a complete venv that imports), the others' is their wall time.
set -u
mkdir -p "$1" && DIR=$(realpath "$1") || exit 1; RUNS=$2; TIER=$3; LABEL=${4:-cold}
TSTORE=${TSTORE:-$PWD/target/release/tstore}
LOCK=$PWD/pylock.$TIER.toml
FS=$(findmnt -n -o FSTYPE --target "$DIR")
now() { date +%s.%N; }

# Starts the caching mirror and rewrites $DIR's copy of the lock to use it.
start_mirror() {
  local port=8739 conf=$DIR/mirror/nginx.conf
  mkdir -p "$DIR/mirror/cache"
  # A mirror left running by a killed run would hold the port.
  [ -f "$DIR/mirror/nginx.pid" ] && kill "$(cat "$DIR/mirror/nginx.pid")" 2>/dev/null && sleep 0.5
  # As root, nginx's workers would run as nobody, who cannot write the cache.
  local user=""; [ "$(id -u)" = 0 ] && user="user root;"
  cat > "$conf" <<NGINX
$user
worker_processes 1;
pid $DIR/mirror/nginx.pid;
error_log $DIR/mirror/error.log;
events { worker_connections 256; }
http {
  access_log off;
  proxy_cache_path $DIR/mirror/cache keys_zone=wheels:10m max_size=20g inactive=7d use_temp_path=off;
  client_body_temp_path $DIR/mirror/tmp-body;
  proxy_temp_path $DIR/mirror/tmp-proxy;
  fastcgi_temp_path $DIR/mirror/tmp-fastcgi;
  uwsgi_temp_path $DIR/mirror/tmp-uwsgi;
  scgi_temp_path $DIR/mirror/tmp-scgi;
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass https://files.pythonhosted.org;
      proxy_ssl_server_name on;
      proxy_http_version 1.1;
      proxy_cache wheels;
      proxy_cache_valid 200 7d;
      proxy_max_temp_file_size 0;
    }
  }
}
NGINX
  nginx -e "$DIR/mirror/error.log" -c "$conf" || { echo "cannot start nginx for MIRROR=1" >&2; exit 1; }
  trap 'kill "$(cat "$DIR/mirror/nginx.pid" 2>/dev/null)" 2>/dev/null' EXIT
  sed -i "s|https://files.pythonhosted.org/|http://127.0.0.1:$port/|g" "$DIR/pylock.$TIER.toml"
  local W=$DIR/w; rm -rf "$W"; mkdir -p "$W"
  UV_CACHE_DIR=$W/uv-cache uv venv -q --python 3.11 "$W/v" &&
    UV_CACHE_DIR=$W/uv-cache uv pip sync -q --python "$W/v/bin/python" "$DIR/pylock.$TIER.toml" ||
    { echo "cannot fill the mirror's cache" >&2; exit 1; }
}
for cfg in bc nobc lazy; do
  sed "s|^venv-root = .*|venv-root = \"$DIR/venvs\"|" "$(dirname "$0")/../tiers.toml" > "$DIR/tiers-$cfg.toml"
  [ $cfg = nobc ] && sed -i 's|^link-mode = .*|&\ncompile-bytecode = false|' "$DIR/tiers-nobc.toml"
  [ $cfg = lazy ] && sed -i 's|^link-mode = .*|&\ncompile-bytecode = "lazy"|' "$DIR/tiers-lazy.toml"
done
cp "$LOCK" "$DIR/"
[ "${MIRROR:-}" = 1 ] && start_mirror
for i in $(seq 1 "$RUNS"); do
  for a in ${APPROACHES:-tstore nobc uv uvbc}; do
    W=$DIR/w; rm -rf "$W" "$DIR/venvs"; mkdir -p "$W"; sync
    export UV_CACHE_DIR=$W/uv-cache TSTORE_HOME=$W/home
    t0=$(now)
    case $a in
      before) "$TSTORE_BEFORE" -v --config "$DIR/tiers-bc.toml" materialize --frozen "$TIER" > "$W/log" 2>&1 ;;
      tstore) "$TSTORE" -v --config "$DIR/tiers-bc.toml" materialize --frozen "$TIER" > "$W/log" 2>&1 ;;
      nobc) "$TSTORE" -v --config "$DIR/tiers-nobc.toml" materialize --frozen "$TIER" > "$W/log" 2>&1 ;;
      lazy) "$TSTORE" -v --config "$DIR/tiers-lazy.toml" materialize --frozen "$TIER" > "$W/log" 2>&1 ;;
      uv) uv venv -q --python 3.11 "$W/v" && uv pip sync -q --python "$W/v/bin/python" "$DIR/pylock.$TIER.toml" ;;
      uvbc) uv venv -q --python 3.11 "$W/v" && uv pip sync -q --compile-bytecode --python "$W/v/bin/python" "$DIR/pylock.$TIER.toml" ;;
    esac || { echo "$a failed" >&2; cat "$W/log" >&2 2>/dev/null; exit 1; }
    t1=$(now)
    wall=$(echo "$t1 - $t0" | bc)
    usable=$(grep -o "usable after [0-9.]*s" "$W/log" 2>/dev/null | grep -o "[0-9.]*" | head -1)
    echo "$LABEL $FS $TIER $a $i $wall ${usable:-$wall}"
  done
done
rm -rf "$DIR/w" "$DIR/venvs"
