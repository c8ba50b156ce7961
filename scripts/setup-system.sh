#!/usr/bin/env bash
# System packages Kiln needs to *run* aarch64 artifacts on an x86_64 machine: qemu-user and the
# aarch64 C/C++ runtime libraries it loads (Debian/Ubuntu names); plus the armhf and riscv64 C
# libraries for tree-ensemble artifacts (plain C, run under qemu-arm / qemu-riscv64).
# Compiling needs none of them. The service tests also need redis-server (Celery broker), the
# PostgreSQL server (the tests start their own throwaway one) and chromium (the job page test).
set -euo pipefail
need=()
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-arm64-cross libgcc-s1-arm64-cross)
[ -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ] || need+=(libstdc++6-arm64-cross)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # tests of `kiln worker` (Celery)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)  # job store on PostgreSQL
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # job page test (headless)
[ -e /usr/arm-linux-gnueabihf/lib/libc.so.6 ] || need+=(libc6-armhf-cross)
[ -e /usr/riscv64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-riscv64-cross)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "kiln: please install qemu-user and an aarch64 sysroot (${need[*]}) with your package manager" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
