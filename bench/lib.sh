# Shared by the benchmark scripts (sourced): the processes a script started, and small
# timing and result helpers. Expects $results (a TSV file of name<TAB>value lines).

declare -A procs=()   # name -> pid of every process still running that we started

stop() {   # stop NAME [SIGNAL]
    local pid=${procs[$1]:-}
    [ -n "$pid" ] || return 0
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "procs[$1]"
}
# Every process still in procs: SIGTERM to all, then wait for each.
stop_all() {
    for name in "${!procs[@]}"; do kill -TERM "${procs[$name]}" 2>/dev/null || true; done
    for name in "${!procs[@]}"; do wait "${procs[$name]}" 2>/dev/null || true; done
}
# Removes the benchmark's data directory DIR, saying so (and how long it took).
remove_data() {   # remove_data DIR
    [ -d "$1" ] || return 0
    echo "removing $1" >&2
    local start=$SECONDS
    rm -rf "$1"
    echo "removed in $((SECONDS - start)) s" >&2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
put() { printf '%s\t%s\n' "$1" "$2" >> "$results"; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
