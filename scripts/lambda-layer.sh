#!/usr/bin/env bash
# Builds the AWS Lambda layer (SPEC 7): a zip holding extensions/bearerd (the binary, which
# Lambda starts as an external extension) and bearerd/ (deploy/lambda/bearerd.yaml and the
# example app it names), so that /opt/bearerd/bearerd.yaml is the default configuration.
#
# Lambda's runtimes run on Amazon Linux 2023 (glibc 2.34): the binary is linked against glibc
# 2.34's symbol versions with cargo-zigbuild (zig from PyPI's `ziglang`), both installed here
# when missing, and the built file is checked: every GLIBC_ version it requires is 2.34 or
# older, and it needs no shared library beyond glibc's and libgcc_s.
#
#   scripts/lambda-layer.sh [OUT.zip]     default target/lambda/bearerd-layer-x86_64.zip
#   LAYER_PROFILE=lambda (default)        the cargo profile (Cargo.toml: release, stripped)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/lambda/bearerd-layer-x86_64.zip}
profile=${LAYER_PROFILE:-lambda}
glibc_max=2.34
target=x86_64-unknown-linux-gnu
build_dir=target/lambda-build

if ! python3 -c "import ziglang" 2>/dev/null; then
  echo "== installing zig (PyPI: ziglang) for cargo-zigbuild"
  python3 -m pip install -q ziglang 2>/dev/null || python3 -m pip install -q --user --break-system-packages ziglang
fi
if ! command -v cargo-zigbuild >/dev/null 2>&1; then
  echo "== installing cargo-zigbuild (crates.io)"
  cargo install -q --locked cargo-zigbuild
fi

echo "== building bearerd ($profile) against glibc $glibc_max"
cargo zigbuild --locked --profile "$profile" --bin bearerd --target "$target.$glibc_max" --target-dir "$build_dir"
dir=$profile
[ "$profile" = dev ] && dir=debug
bin="$build_dir/$target/$dir/bearerd"

echo "== checking $bin for Amazon Linux 2023"
scripts/check-glibc.sh "$bin" "$glibc_max"

echo "== packing the layer"
mkdir -p "$(dirname "$out")"
python3 - "$bin" "$out" <<'PY'
import os, sys, zipfile
binary, out = sys.argv[1], sys.argv[2]
def add(z, src, name, mode):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f:
        z.writestr(info, f.read())
with zipfile.ZipFile(out + ".tmp", "w") as z:
    add(z, binary, "extensions/bearerd", 0o755)
    add(z, "deploy/lambda/bearerd.yaml", "bearerd/bearerd.yaml", 0o644)
    for root, _, files in os.walk("config/apps"):
        for f in sorted(files):
            src = os.path.join(root, f)
            add(z, src, "bearerd/apps/" + os.path.relpath(src, "config/apps"), 0o644)
os.replace(out + ".tmp", out)
with zipfile.ZipFile(out) as z:
    for i in z.infolist():
        print(f"  {i.external_attr >> 16:o} {i.file_size:>10} {i.filename}")
PY
echo "$out: $(stat -c %s "$out") bytes (binary: $(stat -c %s "$bin") bytes)"
