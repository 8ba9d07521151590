"""The binary kernel's tests on its NEON path, on an x86-64 machine: cross-compiled for aarch64 and run under
qemu-user (`make test-neon`).

    python runtime/cpp/tools/neon_test.py [--build runtime/cpp/build]

Cross compiler: aarch64-linux-gnu-g++ where it is installed, else Zig's clang from the ziglang wheel (`python -m
ziglang c++ -target aarch64-linux-musl`; its first build of the target's C++ library takes minutes, cached after).
Emulator: qemu-aarch64 or qemu-aarch64-static where installed, else qemu-aarch64-static from Debian's
qemu-user-static package, downloaded once into <build>/_deps and checked against a pinned SHA-256 (a static x86-64
binary: no root, no dpkg). Prints the test's own lines; exit status 0 only when every check passed on the NEON path,
77 (ctest: skipped) when no emulator could be had, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
TESTS = Path(__file__).resolve().parents[1] / "tests"
QEMU_DEB = "qemu-user-static_7.2+dfsg-7+deb12u18+b3_amd64.deb"
QEMU_DEB_SHA256 = "c3e3ba2bd87f8c5b9a5da5ef21b5a3b82d7c63b89dd448d9ddaa4eabc5b6e402"
QEMU_MIRRORS = ("https://deb.debian.org/debian", "http://deb.debian.org/debian")
QEMU_MEMBER = "usr/bin/qemu-aarch64-static"


SKIPPED = 77  # ctest's SKIP_RETURN_CODE for this test: no emulator could be had


class NeonTestError(Exception):
    """A one-line reason the NEON path failed its test or could not be built."""


class NoEmulator(Exception):
    """A one-line reason no aarch64 emulator could be had (offline and none installed): a skip, not a failure."""


def cross_compiler() -> list[str]:
    gcc = shutil.which("aarch64-linux-gnu-g++")
    if gcc:
        return [gcc, "-static"]
    if importlib.util.find_spec("ziglang") is not None:
        return [sys.executable, "-m", "ziglang", "c++", "-target", "aarch64-linux-musl", "-static"]
    raise NeonTestError("no aarch64 cross compiler: install aarch64-linux-gnu-g++, or `pip install ziglang` "
                        "(make test-neon does)")


def ar_member(archive: bytes, prefix: str) -> bytes:
    """The first member of an ar archive (a .deb) whose name starts with `prefix`."""
    if not archive.startswith(b"!<arch>\n"):
        raise NeonTestError("the downloaded package is not an ar archive")
    at = 8
    while at + 60 <= len(archive):
        header = archive[at:at + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if name.startswith(prefix):
            return archive[at + 60:at + 60 + size]
        at += 60 + size + (size % 2)
    raise NeonTestError(f"the downloaded package has no {prefix}* member")


def downloaded_qemu(build: Path) -> Path:
    """qemu-aarch64-static from Debian's package, fetched and unpacked once (temp file, then rename)."""
    target = build / "_deps" / f"qemu-aarch64-static-{QEMU_DEB_SHA256[:12]}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    package = None
    problems = []
    for mirror in QEMU_MIRRORS:
        url = f"{mirror}/pool/main/q/qemu/{QEMU_DEB.replace('+', '%2B')}"
        print(f"downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
        except OSError as error:
            problems.append(f"{url}: {error}")
            continue
        if hashlib.sha256(data).hexdigest() != QEMU_DEB_SHA256:
            problems.append(f"{url}: SHA-256 differs from the pinned {QEMU_DEB_SHA256}")
            continue
        package = data
        break
    if package is None:
        raise NoEmulator("could not fetch qemu-user-static (" + "; ".join(problems) + ")")
    with tarfile.open(fileobj=io.BytesIO(ar_member(package, "data.tar")), mode="r:*") as tree:
        member = next((m for m in tree.getmembers() if m.name.lstrip("./") == QEMU_MEMBER and m.isfile()), None)
        if member is None:
            raise NeonTestError(f"{QEMU_DEB} holds no {QEMU_MEMBER}")
        binary = tree.extractfile(member).read()
    partial = target.with_suffix(".part")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def emulator(build: Path) -> str:
    for name in ("qemu-aarch64", "qemu-aarch64-static"):
        found = shutil.which(name)
        if found:
            return found
    return str(downloaded_qemu(build))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path("runtime/cpp/build"),
                        help="folder for the aarch64 test binary and the downloaded emulator")
    args = parser.parse_args(argv)
    try:
        compiler = cross_compiler()
        qemu = emulator(args.build)
        binary = args.build / "test_binary_conv_aarch64"
        args.build.mkdir(parents=True, exist_ok=True)
        print(f"compiling for aarch64 with {' '.join(compiler[:4])}", flush=True)
        built = subprocess.run([*compiler, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Wextra",
                                f"-I{KERNELS}", f"-I{TESTS}", str(KERNELS / "binary_conv.cpp"),
                                str(KERNELS / "tests" / "test_binary_conv.cpp"), "-o", str(binary)])
        if built.returncode != 0:
            raise NeonTestError("the aarch64 build of test_binary_conv failed (compiler output above)")
        ran = subprocess.run([qemu, str(binary)], capture_output=True, text=True)
        sys.stdout.write(ran.stdout + ran.stderr)
        paths = next((line for line in ran.stdout.splitlines() if line.startswith("paths runnable here:")), "")
        if "neon" not in paths.split(";")[0]:
            raise NeonTestError("the emulated test did not report the NEON path as runnable")
        if ran.returncode != 0:
            raise NeonTestError(f"test_binary_conv failed under {Path(qemu).name} (exit {ran.returncode})")
    except NoEmulator as error:
        print(f"skipped: no aarch64 emulator: {error}", file=sys.stderr)
        return SKIPPED
    except NeonTestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"NEON path tested under {Path(qemu).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
