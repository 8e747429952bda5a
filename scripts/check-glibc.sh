#!/usr/bin/env bash
# Checks that an ELF binary runs on a glibc of version MAX (Amazon Linux 2023: 2.34): every
# GLIBC_ symbol version it requires is MAX or older, and the shared libraries it needs are
# glibc's own or libgcc_s. Exit 1 naming what is newer or missing.
#   scripts/check-glibc.sh FILE MAX
set -euo pipefail
file=$1
max=$2
command -v readelf >/dev/null 2>&1 || { echo "readelf (binutils) is needed" >&2; exit 1; }
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 1; }
newest=$(readelf --version-info --wide "$file" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$newest" ] || { echo "$file: no GLIBC_ symbol versions (not a glibc binary?)" >&2; exit 1; }
too_new=$(readelf --version-info --wide "$file" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV \
  | awk -v max="$max" '{ split($1, a, "."); split(max, m, "."); if (a[1] > m[1] || (a[1] == m[1] && a[2] + 0 > m[2] + 0)) print "GLIBC_" $1 }')
if [ -n "$too_new" ]; then
  echo "$file requires glibc symbol versions newer than $max:" $too_new >&2
  exit 1
fi
allowed='^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'
needed=$(readelf --dynamic --wide "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for lib in $needed; do
  if ! [[ "$lib" =~ $allowed ]]; then
    echo "$file needs $lib, which Amazon Linux 2023's base image may not have" >&2
    exit 1
  fi
done
echo "$file: newest glibc symbol version GLIBC_$newest (<= $max); needs:" $needed
