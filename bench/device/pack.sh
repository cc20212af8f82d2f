#!/usr/bin/env bash
# Packs what issue 21's 16-core figures need on the bench machine, which reaches no package registry,
# into .dev/ (git-ignored): node and the built project (../shared/bench-machine/pack.sh), the peers
# (oras, crane, distribution, GNU time) and huggingface_hub's wheels for the Pythons it may have.
# Here, after `npm run build`:   bash bench/device/pack.sh
# There (one device run):        bash bench/device/run.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
gobin="$(go env GOPATH)/bin"
bash ../shared/bench-machine/pack.sh "$gobin/oras" "$gobin/crane" /usr/bin/docker-registry /usr/bin/time
hf=$(node -e 'import("./dist/bench/lib/peers.js").then((m) => console.log(m.HF_HUB_VERSION))')
mkdir -p .dev/wheels
for py in 3.10 3.11 3.12 3.13; do
  python3 -m pip download -q --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d .dev/wheels "huggingface_hub==$hf"
done
# The emulation's CDN certificate for the TLS rows (the bench machine may have no openssl).
mkdir -p .dev/tls
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj /CN=cake-bench-cdn -addext subjectAltName=IP:127.0.0.2,DNS:localhost \
  -keyout .dev/tls/key.pem -out .dev/tls/cert.pem 2>/dev/null
du -sh .dev
