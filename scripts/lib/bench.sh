# Shared by the scripts/bench-*.sh benchmarks. Source it; it defines:
#   bench_section NAME FILE   replace the section between <!-- bench:NAME --> and <!-- /bench:NAME --> in
#                             docs/BENCHMARKS.md with FILE's contents (appending the section if it is new),
#                             so each benchmark rewrites only its own table.
#   bench_median_ms JSON CMD_INDEX   the median in ms of one command from a hyperfine --export-json file.
#   bench_hf JSON HYPERFINE-ARGS...   hyperfine -N over the commands in rounds, taking turns (below).
bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

bench_section() {
    local name=$1 body=$2 doc="$bench_root/docs/BENCHMARKS.md"
    [ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
    python3 - "$doc" "$name" "$body" <<'PY'
import sys
doc, name, body = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip("\n")
start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
text = open(doc).read()
block = f"{start}\n{body}\n{end}"
if start in text and end in text:
    a, b = text.index(start), text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(doc, "w").write(text)
PY
}

bench_median_ms() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.3f" % (r["median"]*1000))' "$1" "$2"
}

# bench_hf JSON ARGS... — hyperfine -N ARGS in BENCH_ROUNDS rounds (default 5) of RUNS/rounds runs of each
# command, the commands taking turns round after round; JSON gets every run's time merged per command, in
# hyperfine's format (median, mean, min, max recomputed). hyperfine alone runs all of one command's runs,
# then all of the next's: on a shared machine whose speed drifts by a third within minutes, a ratio
# between two commands then measured the drift as much as the commands. In turns, every command sees the
# same mix of quiet and busy moments. Warm-up runs (WARMUP, default 3) start the first round; later rounds
# warm up with one run.
bench_hf() {
    local json=$1 rounds=${BENCH_ROUNDS:-5} r
    shift
    local per=$(((${RUNS:-30} + rounds - 1) / rounds))
    for ((r = 0; r < rounds; r++)); do
        # shellcheck disable=SC2086 # HF_EXTRA is a list of options
        hyperfine -N ${HF_EXTRA:---style none} --warmup "$([ "$r" = 0 ] && echo "${WARMUP:-3}" || echo 1)" \
            --runs "$per" --export-json "$json.$r" "$@" >/dev/null || return
    done
    python3 - "$json" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
parts = [json.load(open(f"{out}.{r}"))["results"] for r in range(rounds)]
merged = []
for i, first in enumerate(parts[0]):
    times = [t for p in parts for t in p[i]["times"]]
    merged.append({"command": first["command"], "times": times, "median": statistics.median(times),
                   "mean": statistics.mean(times), "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
                   "min": min(times), "max": max(times), "rounds": rounds})
json.dump({"results": merged}, open(out, "w"))
PY
}

# One line describing the machine a run was made on, for the top of each table.
bench_machine() {
    echo "$(date -u +%Y-%m-%d), kernel $(uname -r), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
}
