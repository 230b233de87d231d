#!/usr/bin/env bash
# aarch64 job: a Debian arm64 userland run under qemu-user on this x86-64
# machine. The package is installed from this checkout (its C kernels
# compiled there by the arm64 gcc, NEON variants picked at run time) next to
# LiteRT's aarch64 wheel, and a fast subset of the suite runs, including the
# native engine's bit-exactness against that wheel (rounding "auto", which is
# "single" on aarch64).
#
#   .ci/arm64.sh                 set up (cached) and run the subset
#   .ci/arm64.sh run CMD...      run CMD in the userland, the checkout at /src
#
# The rootfs and its virtualenv are cached in EDGED_ARM_CACHE (default
# ~/.cache/edged/arm64-rootfs); delete it to start cold. Needs root (chroot,
# mount namespaces) and binfmt_misc, which it registers when missing.
# QEMU_CPU picks the emulated core: cortex-a76 by default (NEON and the dot
# product, so both NEON GEMM variants run), cortex-a72 has no dot product. Not
# "max": LiteRT's XNNPACK delegate misbehaves there.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)

root=${EDGED_ARM_CACHE:-$HOME/.cache/edged/arm64-rootfs}
suite=${EDGED_ARM_SUITE:-bookworm}
mirror=${EDGED_ARM_MIRROR:-http://deb.debian.org/debian}
qemu_cpu=${QEMU_CPU:-cortex-a76}
litert=${EDGED_ARM_LITERT:-ai-edge-litert==2.3.0}
# The subset: the rounding semantics and the converter fixtures against this
# LiteRT (auto -> single), every op against LiteRT (the C-against-numpy pairs of
# every op run on x86; here test_rounding.py runs them for the GEMM ops, whose
# NEON kernels are aarch64's own, and test_neon_bodies.py for HARD_SWISH,
# SOFTMAX and DEQUANTIZE, whose aarch64 LiteRT forms single mode reproduces),
# whole models, the reader.
ARM_SUBSET="tests/runtime/test_rounding.py tests/runtime/test_neon_bodies.py tests/runtime/test_models.py \
  tests/ops/test_ops_vs_litert.py tests/ops/test_mul_hard_swish.py \
  tests/model/test_fold.py tests/model/test_tflite_io.py \
  -k 'not vs-reference'"
# Bump to rebuild a cached rootfs whose contents no longer fit this script.
stamp_version=1

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v unshare >/dev/null || need+=(util-linux)
command -v rsync >/dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Executing aarch64 binaries inside the chroot needs a binfmt_misc handler;
# the F flag makes the kernel open the interpreter now, so the chroot does
# not need its own copy.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || {
    echo "arm64: binfmt_misc is not available here (cannot mount it): the aarch64 job cannot run" >&2
    exit 2
  }
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  printf '%s' ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
    >"$binfmt/register"
fi

# A /proc/cpuinfo that looks like the emulated core: LiteRT (cpuinfo) reads
# it to choose its kernels and refuses an x86 one.
cpuinfo() {
  local features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
  local part=0xd08
  if [ "$qemu_cpu" = cortex-a76 ]; then
    features="$features atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
    part=0xd0b
  fi
  local n
  for n in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$n" "$features"
    printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 0\n\n' "$part"
  done
}

# Runs "$@" (a shell command line) in the userland, in a private mount
# namespace: /proc with the ARM cpuinfo, /dev, the host's CA bundle (a TLS
# proxy may sit between here and PyPI) and the checkout's copy at /src.
in_userland() {
  local tmp
  tmp=$(mktemp -d)
  cpuinfo >"$tmp/cpuinfo"
  cp /etc/ssl/certs/ca-certificates.crt "$tmp/ca.crt" 2>/dev/null || : >"$tmp/ca.crt"
  unshare --mount --propagation private sh -ec '
    root=$1 tmp=$2 cpu=$3; shift 3
    mount -t proc proc "$root/proc"
    mount --bind "$tmp/cpuinfo" "$root/proc/cpuinfo"
    mount --rbind /dev "$root/dev"
    mount -t sysfs sysfs "$root/sys"
    mkdir -p "$root/tmp/ci-ca"
    mount --bind "$tmp" "$root/tmp/ci-ca"
    ca=/etc/ssl/certs/ca-certificates.crt
    [ -s "$tmp/ca.crt" ] && ca=/tmp/ci-ca/ca.crt
    exec env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      QEMU_CPU="$cpu" PIP_CERT="$ca" PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
      chroot "$root" sh -ec "$*"
  ' sh "$root" "$tmp" "$qemu_cpu" "$@"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

stamp="$root/.edged-ready-$stamp_version"
if [ ! -e "$stamp" ]; then
  echo "arm64: building the userland in $root (cold: a few minutes)"
  rm -rf "$root.tmp"
  mkdir -p "$(dirname "$root")"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates \
    "$suite" "$root.tmp" "$mirror" >/dev/null
  chroot "$root.tmp" /debootstrap/debootstrap --second-stage >/dev/null
  rm -rf "$root"
  mv "$root.tmp" "$root"
  in_userland "python3 -m venv /opt/venv && pip install -q --upgrade pip && \
    pip install -q '$litert' numpy cffi flatbuffers pyzmq prometheus-client psutil pytest hypothesis setuptools wheel"
  touch "$stamp"
fi

# The checkout as it is (uncommitted changes included), without the host's
# build products, copied in: pip builds in the source tree.
rsync -a --delete --exclude '.venv' --exclude '.ci-venv*' --exclude '.git' --exclude 'build' \
  --exclude '*.so' --exclude '__pycache__' --exclude '*.egg-info' --exclude '.hypothesis' \
  "$src/" "$root/src/"

if [ "${1:-}" = run ]; then
  shift
  in_userland "cd /src && $*"
  exit
fi

# Editable: pytest imports edged from /src (the rootdir goes on sys.path), so
# the compiled module must sit there too. Compiling under qemu takes minutes:
# skipped when the kernels and build files are those of the last build.
build_hash=$(cat kernels/*.[ch] kernels/ref/*.c kernels/simd/*.[ch] kernels/build_ffi.py setup.py setup.cfg \
  pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$root/.edged-build-hash" 2>/dev/null)" != "$build_hash" ] || ! ls "$root"/src/edged/_kernels*.so >/dev/null 2>&1; then
  rm -f "$root/.edged-build-hash"
  in_userland "cd /src && pip install -q --no-build-isolation --no-deps -e ."
  echo "$build_hash" >"$root/.edged-build-hash"
fi
in_userland "cd /src && python -c 'import platform, edged.runtime.kernels as k; from edged.model.rounding import resolve_rounding; \
print(platform.machine(), [k.VARIANT_NAMES[v] for v in k.available_variants()], \"rounding auto ->\", resolve_rounding())'"

tests=${EDGED_ARM_TESTS:-"$ARM_SUBSET"}
in_userland "cd /src && python -m pytest -q -p no:cacheprovider $tests"
