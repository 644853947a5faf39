#!/usr/bin/env bash
# check-fsync.sh: proves with strace that hookrelay answers 202 only after the event is
# on disk, and that concurrent ingests share their syncs (group commit).
#
# It starts hookrelay under
#   strace -f -tt -y -e trace=pwrite64,fdatasync,fsync,write,writev,sendto,sendmsg
# on a fresh data directory, creates a merchant (with no endpoint, so nothing but
# ingests writes to the store), sends SEQUENTIAL ingests one at a time, then SENDERS
# concurrent senders of PER_SENDER ingests each, stops it with SIGTERM and reads the
# trace (strace writes its lines in the order the calls happened):
#   * every sequential 202: a pwrite64 to <data dir>/db came after the previous HTTP
#     response, and an fdatasync/fsync of <data dir>/db started after the last such
#     pwrite64 returned and returned before the 202 was written;
#   * the concurrent burst: how many syncs of <data dir>/db served how many 202s
#     (fewer syncs than 202s means commits were shared).
# The same check runs in `cargo test --test api durability::`.
#
# Usage: scripts/check-fsync.sh [path/to/hookrelay]
#   default binary: target/debug/hookrelay (built with cargo when missing)
#   environment: SEQUENTIAL=20 SENDERS=8 PER_SENDER=50 PORT=<random free> KEEP=1 (keep the
#   work directory with the trace)
# Needs: strace, curl, awk. Exit status 0 when both properties hold, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${1:-target/debug/hookrelay}
SEQUENTIAL=${SEQUENTIAL:-20}
SENDERS=${SENDERS:-8}
PER_SENDER=${PER_SENDER:-50}
token=check-fsync-admin-token-0123456789

for tool in strace curl awk; do
    command -v "$tool" >/dev/null || { echo "check-fsync: $tool is not on PATH" >&2; exit 2; }
done
if [[ ! -x $bin ]]; then
    cargo build --bin hookrelay
fi
bin=$(realpath "$bin")

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${PORT:-}
for _ in $(seq 50); do
    [[ -n $PORT ]] && break
    candidate=$((20000 + RANDOM % 40000))
    port_is_free "$candidate" && PORT=$candidate
done
base=http://127.0.0.1:$PORT

work=$(mktemp -d)
data=$work/data
trace=$work/trace
strace_pid=
gateway_pid=
cleanup() {
    [[ -n $gateway_pid ]] && kill -KILL "$gateway_pid" 2>/dev/null || true
    [[ -n $strace_pid ]] && wait "$strace_pid" 2>/dev/null || true
    if [[ -n ${KEEP:-} ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

HOOKRELAY_LISTEN=127.0.0.1:$PORT HOOKRELAY_DATA_DIR=$data HOOKRELAY_ADMIN_TOKEN=$token HOOKRELAY_LOG=warn \
    strace -f -tt -y -e trace=pwrite64,fdatasync,fsync,write,writev,sendto,sendmsg -o "$trace" "$bin" \
    2>"$work/stderr" &
strace_pid=$!

ready=
for _ in $(seq 300); do
    if curl -sf -o /dev/null "$base/readyz"; then ready=1; break; fi
    sleep 0.1
done
[[ -n $ready ]] || { echo "check-fsync: hookrelay did not become ready:" >&2; cat "$work/stderr" >&2; exit 2; }
# strace may fork helpers first: hookrelay is the child running the binary.
for child in $(cat "/proc/$strace_pid/task/$strace_pid/children"); do
    [[ $(readlink "/proc/$child/exe" || true) == "$bin" ]] && gateway_pid=$child
done
[[ -n $gateway_pid ]] || { echo "check-fsync: cannot find hookrelay under strace" >&2; exit 2; }

merchant=$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"id":"fsync-check"}' "$base/api/v1/merchants")
ingest_url=$(printf '%s' "$merchant" | sed -n 's/.*"ingest_url":"\([^"]*\)".*/\1/p')
[[ -n $ingest_url ]] || { echo "check-fsync: no ingest_url in $merchant" >&2; exit 2; }

ingest() { curl -s -o /dev/null -w '%{http_code}\n' -H 'content-type: application/json' -d "{\"id\":\"$1\"}" "$ingest_url"; }
for i in $(seq "$SEQUENTIAL"); do
    code=$(ingest "seq-$i")
    [[ $code == 202 ]] || { echo "check-fsync: sequential ingest $i answered $code" >&2; exit 1; }
done
senders=()
for s in $(seq "$SENDERS"); do
    ( for i in $(seq "$PER_SENDER"); do ingest "par-$s-$i"; done ) >"$work/codes.$s" &
    senders+=($!)
done
wait "${senders[@]}"
bad=$(cat "$work"/codes.* | grep -vc '^202$' || true)
[[ $bad == 0 ]] || { echo "check-fsync: $bad concurrent ingests were not answered 202" >&2; exit 1; }

kill -TERM "$gateway_pid"
wait "$strace_pid" || { echo "check-fsync: hookrelay did not exit cleanly:" >&2; cat "$work/stderr" >&2; exit 1; }
gateway_pid=
strace_pid=

awk -v DB="<$(realpath "$data")/db>" -v SEQ="$SEQUENTIAL" -v TOTAL=$((SEQUENTIAL + SENDERS * PER_SENDER)) '
function returned_ok(line,    r, i, b) {
    r = line
    while ((i = index(r, " = ")) > 0) r = substr(r, i + 3)
    split(r, b, " ")
    return b[1] ~ /^[0-9]+$/
}
function on_db(args,    first) {
    first = substr(args, 1, index(args, ">"))
    return length(first) >= length(DB) && substr(first, length(first) - length(DB) + 1) == DB
}
{
    pid = $1
    rest = $0
    sub(/^ *[^ ]+ +[^ ]+ /, "", rest)
    if (rest ~ /^<\.\.\. /) {
        split(rest, word, " ")
        key = pid SUBSEP word[2]
        if (key in pending) { c = pending[key]; delete pending[key]; ex[c] = NR; ok[c] = returned_ok(rest) }
        next
    }
    p = index(rest, "(")
    if (p == 0) next
    name = substr(rest, 1, p - 1)
    args = substr(rest, p + 1)
    if (name == "pwrite64" && on_db(args)) k = "W"
    else if ((name == "fdatasync" || name == "fsync") && on_db(args)) k = "S"
    else if ((name == "write" || name == "writev" || name == "sendto" || name == "sendmsg") && index(args, "\"HTTP/1.1 ") > 0)
        k = index(args, "\"HTTP/1.1 202") > 0 ? "A" : "R"
    else next
    n++
    kind[n] = k; en[n] = NR
    if (index(rest, "<unfinished ...>") > 0) { pending[pid SUBSEP name] = n; ex[n] = 1e18; ok[n] = 0 }
    else { ex[n] = NR; ok[n] = returned_ok(rest) }
}
END {
    accepted = 0; failed = 0; last_response = 0; last_write = 0; syncs = 0; burst = 0
    for (c = 1; c <= n; c++) {
        if (kind[c] == "W") last_write = c
        if (kind[c] != "A" && kind[c] != "R") continue
        if (kind[c] == "A") {
            accepted++
            if (accepted <= SEQ) {
                why = ""
                if (last_write == 0 || en[last_write] < last_response) why = "no pwrite64 to db since the previous response"
                else if (ex[last_write] > en[c] || !ok[last_write]) why = "the last pwrite64 had not returned"
                else {
                    covered = 0
                    for (s = last_write + 1; s < c; s++)
                        if (kind[s] == "S" && en[s] > ex[last_write] && ex[s] < en[c] && ok[s]) covered = 1
                    if (!covered) why = "no fdatasync/fsync of db between the last pwrite64 and the 202"
                }
                if (why != "") { failed++; printf "202 #%d (trace line %d): %s\n", accepted, en[c], why }
                if (accepted == SEQ) seq_end = en[c]
            } else {
                burst++; last_accepted = en[c]
            }
        }
        last_response = en[c]
    }
    for (c = 1; c <= n; c++) if (kind[c] == "S" && en[c] > seq_end && en[c] < last_accepted) syncs++
    printf "sequential: %d of %d 202s answered after a sync of db (%d not)\n", (accepted < SEQ ? accepted : SEQ) - failed, SEQ, failed
    printf "concurrent: %d 202s, %d syncs of db\n", burst, syncs
    status = 0
    if (accepted != TOTAL) { printf "FAIL: the trace shows %d 202s, %d were answered\n", accepted, TOTAL; status = 1 }
    if (failed > 0) { print "FAIL: some 202s were written before the data was synced"; status = 1 }
    if (syncs >= burst) { print "FAIL: no fewer syncs than 202s: commits are not shared"; status = 1 }
    if (status == 0) print "OK"
    exit status
}' "$trace"
