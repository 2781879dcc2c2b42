# Shared by cross/build and cross/check (sourced, not run): the toolchains, the C
# libraries built for each ARM target, and the environment cargo needs to link them.
#
# Every target is built with zig as the C compiler and linker (cargo-zigbuild, both from
# PyPI), because zig carries glibc and musl for every ARM flavour and takes an exact CPU:
#   aarch64-unknown-linux-gnu      glibc, symbols pinned to 2.36 (Raspberry Pi OS bookworm)
#   armv7-unknown-linux-gnueabihf  glibc 2.36, ARMv7 Thumb-2 + VFPv3-D16 (Debian armhf's ABI)
#   arm-unknown-linux-musleabihf   static musl, ARMv6 + VFPv2 hard-float (ARM1176: Pi Zero/1);
#                                  no prebuilt std is reachable for it, so std is built from
#                                  stable's rust-src into a sysroot of its own (cross_sysroot).
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

# Runs a command and logs its wall and CPU seconds on a `time:` line, so a run shows
# where its minutes went. The command runs in a subshell whose own `times` is read:
# the calling shell's would also count background jobs that happened to end meanwhile.
cross_timed() {
    local label=$1 start=$SECONDS
    shift
    (
        f=$(mktemp)
        rc=0
        "$@" || rc=$?
        times >"$f"
        awk -v label="$label" -v wall=$((SECONDS - start)) '
            function sec(x,  a) { split(x, a, /[ms]/); return a[1] * 60 + a[2] }
            NR == 2 { printf "time: %s: %d s wall, %.0f s CPU\n", label, wall, sec($1) + sec($2) }' "$f" >&2
        rm -f "$f"
        exit $rc
    )
}

cross_repo() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Where binaries go: dist/ (what `punnet image build` reads) unless CROSS_DIST says
# otherwise (cross/check's unoptimised agents must not replace released ones there).
cross_dist() { echo "${CROSS_DIST:-$(cross_repo)/dist}"; }

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

# The CPU the C libraries of target/cross are compiled for: the oldest Pi core each
# target runs on. ARMv6 (Pi 1, Zero, Zero W: ARM1176) takes the Rust target's own
# features (+v6, +vfp2, +strict-align), in the spelling cargo-zigbuild hands zig for the
# Rust code's link: zig builds musl and compiler-rt for each set of CPU features (and
# for stripped or not, PIC or not) it is called with, 45-60 s of CPU each, so one set for
# the C libraries' configure tests and the binaries' link means one build instead of four.
cross_zig_cpu() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "cortex_a53" ;;        # Pi 3, Zero 2 W
        armv7-unknown-linux-gnueabihf) echo "cortex_a7" ;;     # Pi 2 v1.1
        arm-unknown-linux-musleabihf) echo "generic+v6+strict_align+vfp2-d32" ;;
    esac
}

# The CPU qemu-user emulates for a target's checks. The glibc targets run against
# Debian's cross glibc (libc6-arm64-cross, libc6-armhf-cross: bookworm's 2.36, the
# oldest the binaries promise to run on) as their sysroot.
cross_qemu() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "qemu-aarch64-static -cpu cortex-a53 -L /usr/aarch64-linux-gnu" ;;
        armv7-unknown-linux-gnueabihf) echo "qemu-arm-static -cpu cortex-a7 -L /usr/arm-linux-gnueabihf" ;;
        arm-unknown-linux-musleabihf) echo "qemu-arm-static -cpu arm1176" ;;
    esac
}

# Whether a target has no std through rustup (404 for its rust-std component), so
# cross_sysroot builds one from the stable toolchain's rust-src.
cross_needs_build_std() { [ "$1" = arm-unknown-linux-musleabihf ]; }

# The opt-level std is compiled at for a cargo profile: the check's code is unoptimised,
# the shipped binaries' std is as small or fast as the rest of them.
cross_std_opt() {
    case "$1" in
        dev) echo 0 ;;
        release-arm) echo s ;;
        *) echo 3 ;;
    esac
}

# A sysroot holding std for TARGET built from the stable toolchain's rust-src, once per
# compiler version and opt-level; prints its directory. The workspace's crates are then
# compiled by the same stable toolchain with `--sysroot` in the target's RUSTFLAGS,
# which cargo gives to the target's code only: the build scripts and proc macros stay the
# host units `cargo test` compiled. (With -Zbuild-std in the workspace build itself the
# whole build needs nightly or RUSTC_BOOTSTRAP=1, and either one compiles the host units
# again: nightly's are its own, and proc-macro2's build script turns on its span API
# under RUSTC_BOOTSTRAP, so every proc macro would be rebuilt.) std is compiled by
# cargo's -Zbuild-std in a crate of its own with its own target directory; its rlibs
# carry LLVM bitcode (embed-bitcode) so that the release profiles' LTO can take them in,
# as rustup's prebuilt std does.
cross_sysroot() {
    local target=$1 opt=$2 work rustc_sysroot version dir crate flags
    work=$(cross_work)
    rustc_sysroot=$(rustc --print sysroot)
    version=$(rustc -vV | awk '/^release:/ { r = $2 } /^commit-hash:/ { h = substr($2, 1, 9) } END { print r "-" h }')
    dir="$work/sysroot/$target-$version-opt-$opt"
    [ -f "$dir/ok" ] && { echo "$dir"; return; }
    [ -d "$rustc_sysroot/lib/rustlib/src/rust/library/std" ] \
        || { echo "error: the stable toolchain has no rust-src (run: rustup component add rust-src)" >&2; return 1; }
    echo "==> std for $target from $(rustc -V)'s rust-src (opt-level $opt)" >&2
    crate="$work/sysroot/std-crate"
    mkdir -p "$crate"
    # An empty library: building it with -Zbuild-std compiles std, and nothing else.
    printf '[package]\nname = "punnet-cross-std"\nversion = "0.0.0"\nedition = "2021"\n\n[lib]\npath = "lib.rs"\n\n[workspace]\n' \
        >"$crate/Cargo.toml"
    echo '//! Empty: built only so that cargo -Zbuild-std compiles std for cross/lib.sh.' >"$crate/lib.rs"
    flags="CARGO_TARGET_$(tr a-z- A-Z_ <<<"$target")_RUSTFLAGS"
    rm -rf "$dir" "$work/sysroot/std-target/$target"
    cross_timed "std for $target (rust-src, opt-level $opt)" env -C "$crate" RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_DIR="$work/sysroot/std-target" "$flags=-C opt-level=$opt -C debuginfo=0 -C embed-bitcode=yes" \
        cargo zigbuild --quiet --release -Zbuild-std=std,panic_abort --target "$target" >&2 \
        || { echo "error: could not build std for $target from rust-src (above)" >&2; return 1; }
    mkdir -p "$dir/lib/rustlib/$target/lib"
    find "$work/sysroot/std-target/$target/release/deps" -name '*.rlib' ! -name 'libpunnet_cross_std-*' \
        -exec cp {} "$dir/lib/rustlib/$target/lib/" \;
    # Proc macros are loaded from the host's libraries, which rustc looks for under the
    # same sysroot.
    ln -s "$rustc_sysroot/lib/rustlib/$(rustc -vV | awk '/^host:/ {print $2}')" "$dir/lib/rustlib/"
    touch "$dir/ok"
    echo "$dir"
}

# The cargo command for a target: `cargo zigbuild ... --target ZIGTRIPLE`, for the
# targets without a rustup std against cross_sysroot's (PROFILE picks its opt-level).
cross_cargo() {
    local target=$1 profile=$2; shift 2
    local zt
    case "$target" in
        *-gnu|*-gnueabihf) zt="$target.$CROSS_GLIBC" ;;
        *) zt="$target" ;;
    esac
    if cross_needs_build_std "$target"; then
        # A std built from source has no self-contained musl start files (crt1.o, crti.o,
        # crtbegin.o that rustup's prebuilt std carries): zig's linker brings its own musl's.
        local flags="CARGO_TARGET_$(tr a-z- A-Z_ <<<"$target")_RUSTFLAGS" sysroot
        sysroot=$(cross_sysroot "$target" "$(cross_std_opt "$profile")") || return 1
        env "$flags=${!flags:-} --sysroot $sysroot -C link-self-contained=no" \
            cargo zigbuild --target "$zt" "$@"
    else
        cargo zigbuild --target "$zt" "$@"
    fi
}

# Installs what cross builds need: Debian packages, zig and cargo-zigbuild from PyPI,
# rustup targets (and rust-src for the targets whose std is built from source).
cross_ensure_tools() {
    ensure_packages qemu-user-static binutils gperf make dpkg-dev python3-pip curl jq \
        libc6-arm64-cross libc6-armhf-cross
    if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1 \
        || [ "$(python3 -m ziglang version)" != "$CROSS_ZIG_VERSION" ] \
        || [ "$(cargo-zigbuild --version)" != "cargo-zigbuild $CROSS_ZIGBUILD_VERSION" ]; then
        echo "==> pip install ziglang==$CROSS_ZIG_VERSION cargo-zigbuild==$CROSS_ZIGBUILD_VERSION"
        # Debian's own python3 wants --break-system-packages; older pips do not know it.
        python3 -m pip install --quiet --break-system-packages "ziglang==$CROSS_ZIG_VERSION" \
            "cargo-zigbuild==$CROSS_ZIGBUILD_VERSION" 2>/dev/null \
            || python3 -m pip install --quiet "ziglang==$CROSS_ZIG_VERSION" "cargo-zigbuild==$CROSS_ZIGBUILD_VERSION" \
            || { echo "error: could not install zig and cargo-zigbuild from PyPI (above): the ARM builds need them" >&2
                 return 1; }
    fi
    local t installed
    installed=$(rustup target list --installed)
    for t in "$@"; do
        if cross_needs_build_std "$t"; then
            rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
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

# The zig C compiler command for a target: for ARMv6 the flags of cargo-zigbuild's
# linker wrapper (see cross_zig_cpu), which also turns zig's sanitizers off.
cross_cc() {
    local flags=""
    cross_needs_build_std "$1" && flags="-g -fno-sanitize=all "
    echo "$(cross_zig) cc $flags-mcpu=$(cross_zig_cpu "$1") -target $(cross_zig_target "$1")"
}

# The C flags of target/cross's libraries. The glibc targets' binaries are
# position-independent executables, so their C code is PIC; ARMv6's are static and not
# PIE, and an -fPIC there would also make zig build musl once more for the configure
# scripts' test programs.
cross_cflags() {
    if cross_needs_build_std "$1"; then echo "-O2"; else echo "-O2 -fPIC"; fi
}

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
    # The configure scripts link test programs stripped, as the binaries are linked
    # (rustc's -Wl,--strip-all): zig builds its libc objects once per choice.
    local env=(CC="$cc" AR="$zig ar" RANLIB="$zig ranlib") cflags ldflags="-Wl,--strip-all"
    cflags=$(cross_cflags "$target")

    if [ ! -f "$out/lib/libseccomp.a" ]; then
        echo "==> libseccomp $CROSS_SECCOMP_VERSION for $target" >&2
        src=$(cross_fetch_source libseccomp "$CROSS_SECCOMP_VERSION") || return 1
        build="$work/$target/build-seccomp"
        rm -rf "$build" && mkdir -p "$build"
        (
            cd "$build"
            env "${env[@]}" CFLAGS="$cflags" LDFLAGS="$ldflags" "$src/configure" --host="$host" --enable-static \
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
            env "${env[@]}" CFLAGS="$cflags" LDFLAGS="$ldflags" ./configure --static >log 2>&1 || { tail -20 log >&2; exit 1; }
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
            env "${env[@]}" CFLAGS="$cflags -Wno-error" CPPFLAGS="-I$out/include" LDFLAGS="$ldflags -L$out/lib" \
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

# Starts building the C libraries of every target given, all at once in the background
# (their configure scripts run one test compile after another, so one target leaves a
# core idle), after fetching the sources one after the other (apt's lists directory is
# shared). cross_wait_clibs waits for one target's. Each logs to target/cross/<t>.log.
declare -A CROSS_CLIB_PIDS=()
cross_start_clibs() {
    local t work
    work=$(cross_work)
    mkdir -p "$work"
    cross_timed "Debian sources of the C libraries" bash -c "source '$(cross_repo)/cross/lib.sh' &&
        cross_fetch_source libseccomp '$CROSS_SECCOMP_VERSION' >/dev/null &&
        cross_fetch_source zlib '$CROSS_ZLIB_VERSION' >/dev/null &&
        cross_fetch_source elfutils '$CROSS_ELFUTILS_VERSION' >/dev/null" || return 1
    for t in "$@"; do
        cross_timed "C libraries for $t (in the background)" cross_build_clibs "$t" >"$work/$t.log" 2>&1 &
        CROSS_CLIB_PIDS[$t]=$!
    done
}

# Waits for the C libraries cross_start_clibs started for a target; on failure shows
# their log.
cross_wait_clibs() {
    local t=$1 log
    log="$(cross_work)/$t.log"
    [ -n "${CROSS_CLIB_PIDS[$t]:-}" ] || return 0
    if wait "${CROSS_CLIB_PIDS[$t]}"; then
        grep '^time:' "$log" >&2 || true
    else
        echo "error: the C libraries for $t did not build:" >&2
        tail -20 "$log" >&2
        return 1
    fi
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

# Copies a target's binaries from cargo's target dir into dist/<target>/. They are
# stripped (cross/build: the release profiles' `strip = true`; cross/check: `-C
# strip=symbols`); one that was not is refused, since
# neither zig's objcopy (--strip-all: "unimplemented") nor the host's binutils can strip
# ARM files.
cross_collect() {
    local target=$1 profile=$2; shift 2
    local dir=$profile p bin out
    [ "$profile" = dev ] && dir=debug
    out="$(cross_dist)/$target"
    mkdir -p "$out"
    for p in "$@"; do
        bin=$(cross_bin_name "$p")
        if readelf -S -W "${CARGO_TARGET_DIR:-$(cross_repo)/target}/$target/$dir/$bin" | grep -q ' \.symtab '; then
            echo "error: $target/$dir/$bin has symbols: build it with a profile that strips" >&2
            return 1
        fi
        cp "${CARGO_TARGET_DIR:-$(cross_repo)/target}/$target/$dir/$bin" "$out/$bin"
    done
}

# The ARM build attributes of FILE, an ELF object or an archive (every member), one
# line per object: "NAME ARCH EXTRA", ARCH its Tag_CPU_arch ("none": no attributes, as
# in data-only members), EXTRA the ARMv7-only things it names (Thumb-2, NEON, VFPv3/v4,
# an architecture profile) joined by commas, or "-".
cross_arm_attrs() {
    local archive=0
    [ "$(head -c 7 "$1")" = '!<arch>' ] && archive=1
    readelf -A "$1" 2>/dev/null | awk -v name="$1" -v archive=$archive '
        function flush() { if (seen) print name, arch, (extra == "" ? "-" : extra) }
        BEGIN { seen = !archive; arch = "none"; extra = "" }
        /^File: / { flush(); name = substr($0, 7); arch = "none"; extra = ""; seen = 1; next }
        /Tag_CPU_arch:/ { arch = $2 }
        /Tag_CPU_arch_profile|Thumb-2|NEON|VFPv3|VFPv4|Tag_Advanced_SIMD_arch/ {
            line = $0; gsub(/[ \t]/, "", line); extra = extra (extra == "" ? "" : ",") line }
        END { flush() }'
}

# Whether a Tag_CPU_arch value runs on an ARM1176 (ARMv6KZ): ARMv6 or older, A/R
# profile, no Thumb-2 (v6T2) and no M profile.
cross_arch_is_armv6() { [[ $1 =~ ^(none|v4|v4T|v5T|v5TE|v5TEJ|v6|v6K|v6KZ)$ ]]; }

# ring's 32-bit ARM assembly: files whose objects carry ARMv7/NEON attributes on every
# target, because they hold NEON code (and start with `.arch armv7-a`). ring calls their
# NEON functions only after its run-time check finds NEON in the kernel's AT_HWCAP
# (ring's src/cpu/arm.rs), which an ARMv6 core never reports; on a Pi 2-5 running the
# ARMv6 build they make TLS and signatures faster. cross_check_ring_armv6 shows the
# integer functions the mixed files also hold (what a Pi Zero runs) are ARMv6 code.
CROSS_RING_NEON_MIXED=(armv4-mont chacha-armv4 sha256-armv4 sha512-armv4)
CROSS_RING_NEON_ONLY=(bsaes-armv7 vpaes-armv7 ghash-armv4 x25519-asm-arm poly1305_arm_asm)

# ring's source directory (cargo's registry copy of the version Cargo.lock names).
cross_ring_src() {
    cargo metadata --format-version 1 --filter-platform arm-unknown-linux-musleabihf 2>/dev/null \
        | python3 -c 'import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "ring": print(os.path.dirname(p["manifest_path"]))'
}

# Assembles ring's mixed integer/NEON files again for the ARM1176 with their NEON parts
# compiled out (__ARM_MAX_ARCH__ 6 instead of ring's fixed 8) and their `.arch armv7-a`
# lines dropped, so the assembler itself refuses any ARMv7 instruction left in the
# integer code: each must assemble, say Tag_CPU_arch v6 and still define its *_nohw
# function. Checks that the NEON-only files define nothing but NEON entry points.
cross_check_ring_armv6() {
    local target=$1 archive=$2 src work zig b out bad=0 syms
    src=$(cross_ring_src)
    [ -n "$src" ] && [ -d "$src/pregenerated" ] || { echo "FAIL ring's source not found" >&2; return 1; }
    zig=$(cross_zig)
    work=$(mktemp -d)
    cp -r "$src/include" "$work/include"
    cp -r "$src/pregenerated/ring_core_generated" "$work/include/"
    sed -i 's/^#define __ARM_MAX_ARCH__ 8$/#define __ARM_MAX_ARCH__ 6/' "$work/include/ring-core/asm_base.h"
    grep -q '^#define __ARM_MAX_ARCH__ 6$' "$work/include/ring-core/asm_base.h" \
        || { echo "FAIL ring's asm_base.h no longer defines __ARM_MAX_ARCH__ 8: check cross_check_ring_armv6" >&2; bad=1; }
    for b in "${CROSS_RING_NEON_MIXED[@]}"; do
        grep -v -P '^\.arch\tarmv7-a$|^\.fpu\tneon$' "$src/pregenerated/$b-linux32.S" >"$work/$b.S"
        if ! out=$("$zig" cc -target "$(cross_zig_target "$target")" -mcpu="$(cross_zig_cpu "$target")" \
            -I "$work/include" -c "$work/$b.S" -o "$work/$b.o" 2>&1); then
            echo "FAIL ring $b: its integer code does not assemble for $(cross_zig_cpu "$target"):" >&2
            echo "$out" | head -10 >&2; bad=1; continue
        fi
        read -r _ arch extra < <(cross_arm_attrs "$work/$b.o")
        syms=$(nm "$work/$b.o" | awk '$2 == "T" { sub(/^ring_core_[0-9_]*_/, "", $3); print $3 }' | tr '\n' ' ')
        if cross_arch_is_armv6 "$arch" && [ "$extra" = - ] && [[ $syms == *_nohw* ]]; then
            echo "ok   ring $b without its NEON part: Tag_CPU_arch $arch, defines $syms"
        else
            echo "FAIL ring $b without its NEON part: Tag_CPU_arch $arch, $extra, defines '$syms'" >&2; bad=1
        fi
    done
    # The NEON-only files: every function they define (in the archive that was linked)
    # has NEON in its name or is ring's vector AES (vpaes_*/bsaes_*), which ring picks
    # only with NEON.
    for b in "${CROSS_RING_NEON_ONLY[@]}"; do
        syms=$(nm -A "$archive" 2>/dev/null | grep -E "[:-]$b(-linux32)?\.o:" \
            | awk '$(NF-1) == "T" { sub(/^ring_core_[0-9_]*_/, "", $NF); print $NF }' | sort -u | tr '\n' ' ')
        if [ -z "$syms" ]; then
            echo "FAIL ring $b: not found in $archive" >&2; bad=1
        elif tr ' ' '\n' <<<"$syms" | grep -v '^$' | grep -qvE '(neon|NEON|^vpaes_|^bsaes_)'; then
            echo "FAIL ring $b defines functions that are not NEON-only: $syms" >&2; bad=1
        else
            echo "ok   ring $b: NEON-only, defines $syms"
        fi
    done
    rm -rf "$work"
    return $bad
}

# ARMv6: the build attributes of the binary and of every object linked into it. zig's
# linker (lld) copies the attributes of the first object it reads into the output and
# merges nothing, so the binary's own `Tag_CPU_arch: v6` proves little by itself: every
# archive of the build is examined as well, the Rust libraries (std from cross_sysroot and
# every crate), ring's C and assembly, libbpf, and target/cross's C libraries. Only
# ring's NEON assembly (above) may name ARMv7 or NEON, and only when
# cross_check_ring_armv6 passes.
# cross_check_armv6_binary FILE: the binary's own attributes; cross_check_armv6 TARGET
# PROFILE: every archive of the build (the same for all of a target's binaries).
cross_check_armv6_binary() {
    local arch extra
    read -r _ arch extra < <(cross_arm_attrs "$1")
    if [ "${arch:0:2}" = v6 ] && cross_arch_is_armv6 "$arch" && [ "$extra" = - ]; then
        echo "ok   $1: Tag_CPU_arch $arch (the first object's attributes; lld merges none)"
    else
        echo "FAIL $1: Tag_CPU_arch $arch, ARMv7-only: $extra" >&2; return 1
    fi
}
cross_check_armv6() {
    local target=$1 profile=$2 dir=$profile tdir bad=0 a name arch extra n=0 ring=() sysroot
    [ "$profile" = dev ] && dir=debug
    tdir="${CARGO_TARGET_DIR:-$(cross_repo)/target}/$target/$dir"
    shopt -s nullglob
    sysroot=$(cross_sysroot "$target" "$(cross_std_opt "$profile")") || return 1
    for a in "$sysroot/lib/rustlib/$target/lib/"*.rlib "$tdir"/deps/*.rlib "$tdir"/deps/*.a \
        "$tdir"/build/*/out/*.a "$(cross_work)/$target/lib/"*.a; do
        while read -r name arch extra; do
            n=$((n + 1))
            if cross_arch_is_armv6 "$arch" && [ "$extra" = - ]; then continue; fi
            if [[ $a == */build/ring-*/out/libring_core_* || $a == */deps/libring-*.rlib ]] \
                && [[ $name =~ [-\(]($(IFS='|'; echo "${CROSS_RING_NEON_MIXED[*]}|${CROSS_RING_NEON_ONLY[*]}"))(-linux32)?\.o\)$ ]]; then
                ring+=("$(basename "$name") ($arch, $extra)")
                continue
            fi
            echo "FAIL $name: Tag_CPU_arch $arch, ARMv7-only: $extra" >&2; bad=1
        done < <(cross_arm_attrs "$a")
    done
    shopt -u nullglob
    echo "ok   $target: $n objects in the build's archives examined; ring's NEON assembly (run-time dispatched): ${#ring[@]} objects"
    local ring_archive
    ring_archive=$(ls -t "$tdir"/build/ring-*/out/libring_core_*.a 2>/dev/null | grep -v _test | head -1)
    cross_check_ring_armv6 "$target" "$ring_archive" || bad=1
    return $bad
}

# The binaries of PACKAGES for a target (in dist/, from this build: a file left there by
# an earlier build of other packages is not looked at): the right ELF machine, the libc
# promise (glibc <= 2.36 or fully static), ARMv6 attributes where that applies, and
# `--version` under qemu-user.
cross_verify() {
    local target=$1 profile=$2 dir f p bad=0 machine qemu out
    shift 2
    dir="$(cross_dist)/$target"
    case "$target" in aarch64-*) machine=AArch64 ;; *) machine=ARM ;; esac
    read -r -a qemu <<<"$(cross_qemu "$target")"
    for p in "$@"; do
        f="$dir/$(cross_bin_name "$p")"
        [ -x "$f" ] || { echo "FAIL $f: missing" >&2; bad=1; continue; }
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
            cross_check_armv6_binary "$f" || bad=1
        fi
        if out=$("${qemu[@]}" "$f" --version 2>&1); then
            echo "ok   $target/$(basename "$f") under ${qemu[*]}: $out"
        else
            echo "FAIL $f --version under ${qemu[*]}: $out" >&2; bad=1
        fi
    done
    if [ "$target" = arm-unknown-linux-musleabihf ]; then
        cross_check_armv6 "$target" "$profile" || bad=1
    fi
    return $bad
}

# A free TCP port on 127.0.0.1.
cross_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Runs a target's controller under qemu-user (temporary --data-dir, REST API and embedded
# broker on free ports, TLS from its own CA) and checks that it serves: /healthz over
# HTTPS, and the target's own CLI, also under qemu and with the admin token the
# controller wrote, creates a ConfigMap, reads it back and lists the nodes (none have
# joined). The store (sled), TLS (rustls, ring) and the API run on the emulated CPU.
cross_serve() {
    local target=$1 dir work http mqtt qemu pid admin out bad=0 start=$SECONDS
    dir="$(cross_dist)/$target"
    read -r -a qemu <<<"$(cross_qemu "$target")"
    work=$(mktemp -d /tmp/punnet-cross-serve.XXXXXX)
    http=$(cross_free_port)
    mqtt=$(cross_free_port)
    "${qemu[@]}" "$dir/punnet-controller" --data-dir "$work/data" --http "127.0.0.1:$http" \
        --mqtt "127.0.0.1:$mqtt" --mqtt5 off >"$work/controller.log" 2>&1 &
    pid=$!
    # Under emulation the first start (CA and server keys, the store) takes seconds.
    for _ in $(seq 600); do
        [ -s "$work/data/punnet.yaml" ] && curl -sf --cacert "$work/data/ca.pem" \
            "https://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    admin=$(awk '/^token:/ {print $2}' "$work/data/punnet.yaml" 2>/dev/null || true)
    if out=$(curl -sS --cacert "$work/data/ca.pem" "https://127.0.0.1:$http/healthz" 2>&1); then
        echo "ok   $target/punnet-controller under ${qemu[0]} serves: /healthz says '$out' after $((SECONDS - start)) s"
    else
        echo "FAIL $target/punnet-controller under ${qemu[0]}: no /healthz ($out); its log:" >&2
        tail -15 "$work/controller.log" >&2; bad=1
    fi
    local cli=("${qemu[@]}" "$dir/punnet" --server "https://127.0.0.1:$http" --ca "$work/data/ca.pem" --token "$admin")
    if [ "$bad" = 0 ] && out=$("${cli[@]}" create configmap cross-check --from-literal "target=$target" 2>&1) \
        && out=$("${cli[@]}" get configmap cross-check -o json 2>&1) \
        && [ "$(jq -r .data.target <<<"$out" 2>/dev/null)" = "$target" ] \
        && out=$("${cli[@]}" get nodes 2>&1) && [ "$out" = "No resources found" ]; then
        echo "ok   $target/punnet under ${qemu[0]} against it: created a ConfigMap, read it back, get nodes: '$out'"
    elif [ "$bad" = 0 ]; then
        echo "FAIL $target/punnet under ${qemu[0]} against it: $out" >&2; bad=1
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
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
            f="$(cross_dist)/$t/$p"
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
