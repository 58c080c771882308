# Shared by the scripts/bench-*.sh benchmarks. Source it; it defines:
#   bench_section NAME FILE   replace the section between <!-- bench:NAME --> and <!-- /bench:NAME --> in
#                             docs/BENCHMARKS.md with FILE's contents (appending the section if it is new),
#                             so each benchmark rewrites only its own table.
#   bench_median_ms JSON CMD_INDEX   the median in ms of one command from a hyperfine --export-json file.
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

# One line describing the machine a run was made on, for the top of each table.
bench_machine() {
    echo "$(date -u +%Y-%m-%d), kernel $(uname -r), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
}
