# Shared by cross/build and cross/check (sourced, not run): the toolchains, the C
# libraries built for each ARM target, and the environment cargo needs to link them.
#
# Every target is built with zig as the C compiler and linker (cargo-zigbuild, both from
# PyPI), because zig carries glibc and musl for every ARM flavour and takes an exact CPU:
#   aarch64-unknown-linux-gnu      glibc, symbols pinned to 2.36 (Raspberry Pi OS bookworm)
#   armv7-unknown-linux-gnueabihf  glibc 2.36, ARMv7 Thumb-2 + VFPv3-D16 (Debian armhf's ABI)
#   arm-unknown-linux-musleabihf   static musl, ARMv6 + VFPv2 hard-float (ARM1176: Pi Zero/1);
#                                  no prebuilt std is reachable for it, so std is built from
#                                  source with nightly's -Zbuild-std.
# C libraries are linked statically into every binary: libseccomp (from Debian's source
# package, so the same release as bookworm's) and the libbpf that libbpf-sys vendors.

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

CROSS_ALL_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf arm-unknown-linux-musleabihf)
# Versions the build was checked with; newer zig releases have broken cargo-zigbuild before.
CROSS_ZIG_VERSION=0.17.1
CROSS_ZIGBUILD_VERSION=0.24.1
CROSS_GLIBC=2.36
CROSS_SECCOMP_VERSION=2.5.4-1+deb12u1
CROSS_ZLIB_VERSION=1:1.2.13.dfsg-1
CROSS_ELFUTILS_VERSION=0.188-2.1

cross_repo() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Where the C libraries and downloaded sources live (inside cargo's target dir, so
# `cargo clean` removes them).
cross_work() { echo "${CARGO_TARGET_DIR:-$(cross_repo)/target}/cross"; }

# Fails with a message naming the valid targets.
cross_check_target() {
    local t
    for t in "${CROSS_ALL_TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
    echo "error: unknown target $1: use one of ${CROSS_ALL_TARGETS[*]}" >&2
    exit 2
}

# The zig target a Rust target links against.
cross_zig_target() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "aarch64-linux-gnu.$CROSS_GLIBC" ;;
        armv7-unknown-linux-gnueabihf) echo "arm-linux-gnueabihf.$CROSS_GLIBC" ;;
        arm-unknown-linux-musleabihf) echo "arm-linux-musleabihf" ;;
    esac
}

# The CPU C code (libseccomp, libbpf, ring's C, zig's own libc objects) is compiled for:
# the oldest Pi core each target runs on.
cross_zig_cpu() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "cortex_a53" ;;        # Pi 3, Zero 2 W
        armv7-unknown-linux-gnueabihf) echo "cortex_a7" ;;     # Pi 2 v1.1
        arm-unknown-linux-musleabihf) echo "arm1176jzf_s" ;;   # Pi 1, Zero, Zero W
    esac
}

# The CPU qemu-user emulates for a target's checks.
cross_qemu() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "qemu-aarch64-static -cpu cortex-a53" ;;
        armv7-unknown-linux-gnueabihf) echo "qemu-arm-static -cpu cortex-a7" ;;
        arm-unknown-linux-musleabihf) echo "qemu-arm-static -cpu arm1176" ;;
    esac
}

# Whether a target needs nightly's -Zbuild-std (no prebuilt std for it through rustup).
cross_needs_build_std() { [ "$1" = arm-unknown-linux-musleabihf ]; }

# The cargo command for a target: `cargo [+nightly] zigbuild ... --target ZIGTRIPLE`.
cross_cargo() {
    local target=$1; shift
    local zt
    zt=$(cross_zig_target "$target")
    case "$target" in
        *-gnu|*-gnueabihf) zt="$target.$CROSS_GLIBC" ;;
        *) zt="$target" ;;
    esac
    if cross_needs_build_std "$target"; then
        cargo +nightly zigbuild -Zbuild-std=std,panic_abort --target "$zt" "$@"
    else
        cargo zigbuild --target "$zt" "$@"
    fi
}

# Installs what cross builds need: Debian packages, zig and cargo-zigbuild from PyPI,
# rustup targets (and nightly's rust-src for -Zbuild-std).
cross_ensure_tools() {
    ensure_packages qemu-user-static binutils gperf make dpkg-dev python3-pip
    if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1 \
        || [ "$(python3 -m ziglang version)" != "$CROSS_ZIG_VERSION" ]; then
        echo "==> pip install ziglang==$CROSS_ZIG_VERSION cargo-zigbuild==$CROSS_ZIGBUILD_VERSION"
        python3 -m pip install --quiet --break-system-packages "ziglang==$CROSS_ZIG_VERSION" \
            "cargo-zigbuild==$CROSS_ZIGBUILD_VERSION" 2>/dev/null \
            || python3 -m pip install --quiet "ziglang==$CROSS_ZIG_VERSION" "cargo-zigbuild==$CROSS_ZIGBUILD_VERSION"
    fi
    local t installed nightly_installed
    installed=$(rustup target list --installed)
    for t in "$@"; do
        if cross_needs_build_std "$t"; then
            rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
            rustup +nightly component list --installed | grep -q '^rust-src' \
                || rustup +nightly component add rust-src
        elif ! grep -qx "$t" <<<"$installed"; then
            rustup target add "$t"
        fi
    done
}

# The zig binary pip installed.
cross_zig() { python3 -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))'; }

# A Debian source package (bookworm's release), unpacked once under target/cross/src and
# fetched with apt's own client into a private list directory, so the system's apt
# sources stay as they are. Prints the unpacked directory.
cross_fetch_source() {
    local package=$1 version=$2 work src
    work=$(cross_work)
    src="$work/src/$package-${version#*:}"
    [ -d "$src" ] && { echo "$src"; return; }
    mkdir -p "$work/src/apt/lists/partial"
    local list="$work/src/apt/debian.sources"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$list"
    else
        list="$work/src/apt/sources.list"
        grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >"$list"
    fi
    local opts=(-o "Dir::State::Lists=$work/src/apt/lists" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::Etc::SourceList=$list")
    (
        cd "$work/src"
        [ -n "$(ls apt/lists/*Sources* 2>/dev/null)" ] || apt-get "${opts[@]}" update -qq >&2
        apt-get "${opts[@]}" source --download-only "$package=$version" >/dev/null 2>&1
        dpkg-source --no-check -x "${package}_${version#*:}.dsc" "$src" >/dev/null
    ) || { echo "error: could not fetch Debian's $package $version source package" >&2; return 1; }
    echo "$src"
}

# The zig C compiler command for a target.
cross_cc() { echo "$(cross_zig) cc -target $(cross_zig_target "$1") -mcpu=$(cross_zig_cpu "$1")"; }

# Builds the static C libraries a target links (libseccomp, zlib, libelf) with zig, once,
# into target/cross/<target>/{lib,include}; prints that directory.
cross_build_clibs() {
    local target=$1 work out zig cc host src build
    work=$(cross_work)
    out="$work/$target"
    [ -f "$out/lib/libseccomp.a" ] && [ -f "$out/lib/libz.a" ] && [ -f "$out/lib/libelf.a" ] \
        && { echo "$out"; return; }
    zig=$(cross_zig)
    cc=$(cross_cc "$target")
    host=${target/unknown-/}
    mkdir -p "$out/lib" "$out/include"
    local env=(CC="$cc" AR="$zig ar" RANLIB="$zig ranlib")

    if [ ! -f "$out/lib/libseccomp.a" ]; then
        echo "==> libseccomp $CROSS_SECCOMP_VERSION for $target" >&2
        src=$(cross_fetch_source libseccomp "$CROSS_SECCOMP_VERSION") || return 1
        build="$work/$target/build-seccomp"
        rm -rf "$build" && mkdir -p "$build"
        (
            cd "$build"
            env "${env[@]}" CFLAGS="-O2" "$src/configure" --host="$host" --enable-static \
                --disable-shared --disable-python >log 2>&1 || { tail -20 log >&2; exit 1; }
            make -j"$(nproc)" -C src libseccomp.la >>log 2>&1 || { tail -20 log >&2; exit 1; }
            cp src/.libs/libseccomp.a "$out/lib/"
        ) || return 1
        rm -rf "$build"
    fi

    if [ ! -f "$out/lib/libz.a" ]; then
        echo "==> zlib $CROSS_ZLIB_VERSION for $target" >&2
        src=$(cross_fetch_source zlib "$CROSS_ZLIB_VERSION") || return 1
        build="$work/$target/build-zlib"
        rm -rf "$build" && cp -a "$src" "$build"
        (
            cd "$build"
            env "${env[@]}" CFLAGS="-O2 -fPIC" ./configure --static >log 2>&1 || { tail -20 log >&2; exit 1; }
            make -j"$(nproc)" libz.a >>log 2>&1 || { tail -20 log >&2; exit 1; }
            cp libz.a "$out/lib/" && cp zlib.h zconf.h "$out/include/"
        ) || return 1
        rm -rf "$build"
    fi

    if [ ! -f "$out/lib/libelf.a" ]; then
        echo "==> libelf (elfutils $CROSS_ELFUTILS_VERSION) for $target" >&2
        src=$(cross_fetch_source elfutils "$CROSS_ELFUTILS_VERSION") || return 1
        build="$work/$target/build-elfutils"
        rm -rf "$build" && mkdir -p "$build"
        # Only libelf.a is built: the argp, fts and obstack that configure looks for (musl
        # has none of them) are used by lib/, the tools and libdw, not by libelf; the
        # C++ demangler check would make zig build libc++ for nothing.
        (
            cd "$build"
            env "${env[@]}" CFLAGS="-O2 -fPIC -Wno-error" CPPFLAGS="-I$out/include" LDFLAGS="-L$out/lib" \
                ac_cv_search_argp_parse="none required" ac_cv_search_fts_close="none required" \
                ac_cv_search__obstack_free="none required" ac_cv_lib_stdcpp___cxa_demangle=no \
                "$src/configure" --host="$host" --disable-debuginfod --disable-libdebuginfod \
                --without-zstd --without-bzlib --without-lzma --disable-nls --disable-demangler \
                --disable-symbol-versioning >log 2>&1 || { tail -20 log >&2; exit 1; }
            make -j"$(nproc)" -C libelf libelf.a >>log 2>&1 || { tail -20 log >&2; exit 1; }
            cp libelf/libelf.a "$out/lib/"
            cp "$src/libelf/libelf.h" "$src/libelf/gelf.h" "$src/libelf/nlist.h" "$out/include/"
        ) || return 1
        rm -rf "$build"
    fi
    echo "$out"
}

# Exports what cargo needs to link a target's C libraries statically: libseccomp-sys
# and libbpf-sys look in target/cross/<target>/lib, and the libbpf that libbpf-sys
# compiles finds libelf's and zlib's headers there.
cross_env() {
    local target=$1 dir
    dir=$(cross_build_clibs "$target") || return 1
    export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$dir/lib"
    export "LIBBPF_SYS_LIBRARY_PATH_${target//-/_}=$dir/lib"
    export LIBBPF_SYS_EXTRA_CFLAGS="-I$dir/include"
}

# The binary a package builds.
cross_bin_name() {
    case "$1" in
        punnet-cli) echo punnet ;;
        *) echo "$1" ;;
    esac
}

# Copies a target's binaries from cargo's target dir into dist/<target>/, stripped.
cross_collect() {
    local target=$1 profile=$2; shift 2
    local dir=$profile p bin out
    [ "$profile" = dev ] && dir=debug
    out="$(cross_repo)/dist/$target"
    mkdir -p "$out"
    for p in "$@"; do
        bin=$(cross_bin_name "$p")
        cp "${CARGO_TARGET_DIR:-$(cross_repo)/target}/$target/$dir/$bin" "$out/$bin.tmp"
        # Profiles other than release may keep symbols; dist/ always holds stripped files.
        "$(cross_zig)" objcopy --strip-all "$out/$bin.tmp" "$out/$bin" 2>/dev/null \
            || mv "$out/$bin.tmp" "$out/$bin"
        rm -f "$out/$bin.tmp"
    done
}

# ARMv6 check: the ELF build attributes say v6, name no ARMv7 feature (Thumb-2, NEON,
# VFPv3 and up), and every object file of the static C libraries says the same.
cross_check_armv6_attributes() {
    local file=$1 attrs bad=0
    attrs=$(readelf -A "$file")
    if ! grep -q 'Tag_CPU_arch: v6' <<<"$attrs"; then
        echo "FAIL $file: Tag_CPU_arch is not v6:" >&2
        grep 'Tag_CPU_arch' <<<"$attrs" >&2 || echo "  (no build attributes)" >&2
        bad=1
    fi
    if grep -E 'Tag_CPU_arch: v7|Tag_CPU_arch_profile|Thumb-2|NEON|VFPv3|VFPv4|Tag_Advanced_SIMD' <<<"$attrs" >&2; then
        echo "FAIL $file: ARMv7-only features in its build attributes (above)" >&2
        bad=1
    fi
    return $bad
}

# Every binary of a target: the right ELF machine, the libc promise (glibc <= 2.36 or
# fully static), ARMv6 attributes where that applies, and `--version` under qemu-user.
cross_verify() {
    local target=$1 dir f bad=0 machine qemu out
    dir="$(cross_repo)/dist/$target"
    case "$target" in aarch64-*) machine=AArch64 ;; *) machine=ARM ;; esac
    read -r -a qemu <<<"$(cross_qemu "$target")"
    for f in "$dir"/*; do
        [ -x "$f" ] || continue
        if ! readelf -h "$f" | grep -q "Machine: *$machine"; then
            echo "FAIL $f: not an $machine executable" >&2; bad=1; continue
        fi
        case "$target" in
            *-musl*)
                if readelf -l "$f" | grep -q 'Requesting program interpreter'; then
                    echo "FAIL $f: dynamically linked, expected fully static" >&2; bad=1
                fi ;;
            *)
                local newest
                newest=$(readelf --dyn-syms -W "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
                if [ "$(printf '%s\n%s\n' "$newest" "GLIBC_$CROSS_GLIBC" | sort -V | tail -1)" != "GLIBC_$CROSS_GLIBC" ]; then
                    echo "FAIL $f: needs $newest, newer than Raspberry Pi OS's glibc $CROSS_GLIBC" >&2; bad=1
                fi ;;
        esac
        if [ "$target" = arm-unknown-linux-musleabihf ]; then
            cross_check_armv6_attributes "$f" || bad=1
        fi
        if out=$("${qemu[@]}" "$f" --version 2>&1); then
            echo "ok   $target/$(basename "$f") under ${qemu[*]}: $out"
        else
            echo "FAIL $f --version under ${qemu[*]}: $out" >&2; bad=1
        fi
    done
    return $bad
}

# A table of the binaries' sizes per target.
cross_size_table() {
    local t p f size
    printf '%-32s' "size (MiB, stripped)"
    for p in punnet-agent punnet-controller punnet; do printf '%20s' "$p"; done
    echo
    for t in "$@"; do
        printf '%-32s' "$t"
        for p in punnet-agent punnet-controller punnet; do
            f="$(cross_repo)/dist/$t/$p"
            if [ -f "$f" ]; then
                size=$(stat -c %s "$f")
                printf '%20s' "$(awk -v s="$size" 'BEGIN { printf "%.1f (%d)", s / 1048576, s }')"
            else
                printf '%20s' "-"
            fi
        done
        echo
    done
}
