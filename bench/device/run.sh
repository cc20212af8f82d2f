#!/usr/bin/env bash
# Issue 21's figures on the 16-core bench machine, in one run (see pack.sh): unpacks .dev/, puts the
# peers where the bench looks for them, installs huggingface_hub from the packed wheels, and runs the
# cold-pull bench on a 3 GB model. The section it writes, its log and the machine's description come
# back under $OUT; copy the section into docs/benchmarks.md here.
#   MB=3072 RUNS=3 LIMIT=540 bash bench/device/run.sh
set -euo pipefail
repo=$(pwd)
out=${OUT:-/tmp/bench-out}; mkdir -p "$out"
bash .dev/unpack.sh
export PATH=/tmp/dev/bin:$PATH GOPATH=/tmp/dev/go
mkdir -p /tmp/dev/go/bin && cp /tmp/dev/bin/oras /tmp/dev/bin/crane /tmp/dev/go/bin/
[ -x /usr/bin/docker-registry ] || cp /tmp/dev/bin/docker-registry /usr/bin/docker-registry
[ -x /usr/bin/time ] || cp /tmp/dev/bin/time /usr/bin/time
python3 -m pip install -q --no-index --find-links .dev/wheels --target /tmp/dev/py huggingface_hub 2>&1 | tail -3
export PYTHONPATH=/tmp/dev/py CAKE_BENCH_TLS=$repo/.dev/tls
{ nproc; free -g; df -h /tmp; python3 --version; command -v curl || echo "no curl"; } > "$out/machine.txt" 2>&1
# The bench writes docs/benchmarks.md beside the project it runs from.
mkdir -p /tmp/dev/app/docs && cp "$repo/docs/benchmarks.md" /tmp/dev/app/docs/
cd /tmp/dev/app
set +e
# Inside the device run's limit (600 s), so that the log comes back even when the bench runs long.
timeout "${LIMIT:-540}" node dist/bench/main.js cold --mb "${MB:-3072}" --runs "${RUNS:-3}" 2>&1 | tee "$out/bench.log"
rc=${PIPESTATUS[0]}
cp docs/benchmarks.md "$out/benchmarks.md"
exit "$rc"
