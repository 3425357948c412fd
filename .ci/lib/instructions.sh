# Sourced, not run: the callgrind measures shared by .ci/instructions (the zero-cost gate, which
# CI runs) and .ci/benchmarks (the report behind BENCHMARKS.md). Each bench of vmbus-kmcl takes
# a mode and an iteration count; the instructions of one iteration are the difference between a
# run of N iterations and a run of none (start-up and teardown cancel), divided by N, against a
# null kernel and KMCL backend. Expects to run from the workspace root.

# Iterations per measured run.
INSTRUCTIONS_N=${INSTRUCTIONS_N:-100000}

# Builds the vmbus-kmcl bench target $1 (bench profile) and prints the path of its executable.
bench_executable() {
    local target=$1 bin
    bin=$(cargo bench -p vmbus-kmcl --bench "$target" --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$target") || return 1
    [ -n "$bin" ] || { echo "bench $target: no executable built" >&2; return 1; }
    echo "$bin"
}

# Instructions callgrind counts for the whole run of executable $1 in mode $2 for $3 iterations.
callgrind_total() {
    local total
    total=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p') || return 1
    [ -n "$total" ] || { echo "callgrind counted nothing for $1 $2 $3" >&2; return 1; }
    echo "$total"
}

# Instructions per iteration of executable $1 in mode $2.
per_iteration() {
    local full empty
    full=$(callgrind_total "$1" "$2" "$INSTRUCTIONS_N") || return 1
    empty=$(callgrind_total "$1" "$2" 0) || return 1
    echo $(( (full - empty) / INSTRUCTIONS_N ))
}

# The checked seed path (request checks, convert a user handle, close the kernel handle):
# sets seed_raw, seed_wrapper, seed_unchecked (raw calls without the checks) and seed_scoped
# (the scoped wrapper form).
measure_seed() {
    local bin
    bin=$(bench_executable handle_path) || return 1
    seed_raw=$(per_iteration "$bin" raw) || return 1
    seed_wrapper=$(per_iteration "$bin" wrapper) || return 1
    seed_unchecked=$(per_iteration "$bin" unchecked) || return 1
    seed_scoped=$(per_iteration "$bin" scoped) || return 1
}

# Receive + complete through the callback pointer KMCL calls: sets receive_raw, receive_wrapper.
measure_receive() {
    local bin
    bin=$(bench_executable receive_path) || return 1
    receive_raw=$(per_iteration "$bin" raw) || return 1
    receive_wrapper=$(per_iteration "$bin" wrapper) || return 1
}

# Send + completion round trip and synchronous request: sets send_raw, send_wrapper,
# request_raw, request_wrapper.
measure_send() {
    local bin
    bin=$(bench_executable send_path) || return 1
    send_raw=$(per_iteration "$bin" raw-send) || return 1
    send_wrapper=$(per_iteration "$bin" wrapper-send) || return 1
    request_raw=$(per_iteration "$bin" raw-request) || return 1
    request_wrapper=$(per_iteration "$bin" wrapper-request) || return 1
}
