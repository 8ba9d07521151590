"""runtime/cpp/tools/neon_test.py (`make test-neon`): the pieces that run without an aarch64 toolchain."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "runtime" / "cpp" / "tools" / "neon_test.py"


@pytest.fixture()
def tool():
    spec = importlib.util.spec_from_file_location("neon_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["neon_test"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["neon_test"]


def ar_archive(members: dict[str, bytes]) -> bytes:
    """An ar archive as dpkg writes one: a global header, then 60-byte member headers, data padded to even sizes."""
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def test_the_package_member_is_found_past_odd_sized_members(tool):
    archive = ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": b"abc", "data.tar.xz": b"payload"})
    assert tool.ar_member(archive, "data.tar") == b"payload"
    assert tool.ar_member(archive, "control") == b"abc"
    with pytest.raises(tool.NeonTestError):
        tool.ar_member(archive, "missing")
    with pytest.raises(tool.NeonTestError):
        tool.ar_member(b"not an archive", "data.tar")


def test_the_emulator_is_unpacked_from_a_package_with_the_pinned_digest(tool, tmp_path: Path, monkeypatch):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tree:
        binary = b"\x7fELF fake emulator"
        info = tarfile.TarInfo("./usr/bin/qemu-aarch64-static")
        info.size = len(binary)
        tree.addfile(info, io.BytesIO(binary))
    package = ar_archive({"debian-binary": b"2.0\n", "data.tar.xz": payload.getvalue()})

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(tool.urllib.request, "urlopen", lambda url, timeout: Response(package))
    import hashlib

    monkeypatch.setattr(tool, "QEMU_DEB_SHA256", hashlib.sha256(package).hexdigest())
    path = tool.downloaded_qemu(tmp_path)
    assert path.read_bytes() == b"\x7fELF fake emulator" and path.stat().st_mode & 0o111
    assert tool.downloaded_qemu(tmp_path) == path  # fetched once
    # a package whose digest differs from the pinned one is refused: no emulator, a skip
    monkeypatch.setattr(tool, "QEMU_DEB_SHA256", "0" * 64)
    with pytest.raises(tool.NoEmulator, match="SHA-256"):
        tool.downloaded_qemu(tmp_path / "other")


def test_without_an_emulator_the_run_is_skipped_with_the_reason(tool, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(tool, "cross_compiler", lambda: ["true"])
    monkeypatch.setattr(tool.shutil, "which", lambda name: None)
    monkeypatch.setattr(tool, "QEMU_MIRRORS", ("http://127.0.0.1:9",))
    assert tool.main(["--build", str(tmp_path)]) == tool.SKIPPED == 77
    err = capsys.readouterr().err.strip()
    assert err.startswith("skipped: no aarch64 emulator: could not fetch qemu-user-static") and "\n" not in err
