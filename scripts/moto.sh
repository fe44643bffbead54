# Sourced by scripts: starts moto's server on a free loopback port and exports MOTO_ENDPOINT and MOTO_PID.
# The caller stops it with `stop_moto` (by PID, only the process we started).
start_moto() {
  local root=$1 log=${2:-"$root/.tools/moto.log"}
  local py="$root/.tools/venv/bin/python"
  local port
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  "$root/.tools/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  MOTO_PID=$!
  export MOTO_PID
  export MOTO_ENDPOINT="http://127.0.0.1:$port"
  local i
  for i in $(seq 1 100); do
    if "$py" -c "import urllib.request,sys; urllib.request.urlopen('$MOTO_ENDPOINT/moto-api/', timeout=1)" 2>/dev/null; then
      echo "moto: listening on $MOTO_ENDPOINT (pid $MOTO_PID)" >&2
      return 0
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "moto: the server exited at start; its log ($log):" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "moto: no answer on $MOTO_ENDPOINT after 20 s; see $log" >&2
  return 1
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
}
