"""Where the importers find a dataset's images: local folders and image shards (tar files), by name or by URL.

MMC4 and OBELICS ship documents that *name* their images (MMC4's ``image_name``) or give their URLs (both);
the pictures themselves are downloaded separately, into folders or into tar shards. Two layouts are read:

- a folder: ``FOLDER/NAME`` (MMC4's ``download_images.py`` writes ``{jsonl stem}_images/NAME``, which is tried
  first for the documents of that file, then ``FOLDER/{jsonl stem}/NAME`` as OpenFlamingo's converter expects);
- a tar file: a member whose base name is ``NAME``.

By URL, both layouts are searched for img2dataset's sidecars: ``KEY.json`` holding ``{"url": ...}`` next to the
image ``KEY.jpg``/``.png``/``.webp``. Names come from untrusted documents: a name that leads outside its folder
(``../x``, an absolute path, a symlink out) is skipped as ``image_outside_root`` without being read, and tar
members are only ever looked up, never extracted.
"""

from __future__ import annotations

import glob
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from flamingo_vlm.data.decoding import IMAGE_EXTENSIONS
from flamingo_vlm.data.skips import BadSample
from flamingo_vlm.io import loads_json, read_bytes

MAX_IMAGE_BYTES = 64 * 2**20  # a larger "image" is not a picture a document shows
MAX_SIDECAR_BYTES = 2**20


@dataclass(frozen=True)
class Member:
    """An image inside a tar shard: ``size`` bytes at ``offset``."""

    archive: str
    offset: int
    size: int


@dataclass
class ImageStore:
    folders: list[str] = field(default_factory=list)  # real paths
    members: dict[str, Member] = field(default_factory=dict)  # tar members by base name
    urls: dict[str, str | Member] = field(default_factory=dict)  # file path or member, by sidecar URL

    @classmethod
    def open(cls, paths: Sequence[str | os.PathLike], urls: bool = True) -> ImageStore:
        """Index folders and ``.tar`` image shards (member headers and sidecar URLs; image bytes are not read).

        ``urls=False`` skips the walk over the folders' sidecars, for importers that look images up by name only.
        """
        store = cls()
        for path in map(os.fspath, paths):
            if os.path.isdir(path):
                store.folders.append(os.path.realpath(path))
                if urls:
                    store._index_folder_urls(path)
            elif os.path.isfile(path) and path.endswith(".tar"):
                store._index_tar(path)
            else:
                raise ValueError(f"image source {path!r} is neither a folder nor a .tar image shard")
        return store

    def _index_folder_urls(self, folder: str) -> None:
        root = os.path.realpath(folder)
        for sidecar in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
            stem = sidecar.removesuffix(".json")
            image = next((f"{stem}.{e}" for e in IMAGE_EXTENSIONS if os.path.isfile(f"{stem}.{e}")), None)
            if image is None or not _inside(image, root) or not _inside(sidecar, root):
                continue  # a symlink leading out of the folder is never read
            try:
                data = read_bytes(sidecar, MAX_SIDECAR_BYTES)
            except (ValueError, OSError):
                continue
            if (url := _sidecar_url(sidecar, data)) is not None:
                self.urls.setdefault(url, image)

    def _index_tar(self, path: str) -> None:
        try:
            with tarfile.open(path, "r:") as tar:  # uncompressed: members are read in place by offset
                found = {m.name: m for m in tar.getmembers() if m.isfile()}
                for name, info in found.items():
                    stem, _, extension = name.rpartition(".")
                    if extension.lower() in IMAGE_EXTENSIONS:
                        self.members.setdefault(os.path.basename(name), Member(path, info.offset_data, info.size))
                    elif extension == "json" and info.size <= MAX_SIDECAR_BYTES:
                        image = next((f"{stem}.{e}" for e in IMAGE_EXTENSIONS if f"{stem}.{e}" in found), None)
                        if image is None:
                            continue
                        raw = tar.extractfile(info)
                        url = _sidecar_url(f"{path}:{name}", raw.read() if raw else b"")
                        if url is not None:
                            member = found[image]
                            self.urls.setdefault(url, Member(path, member.offset_data, member.size))
        except (tarfile.TarError, OSError) as e:
            raise ValueError(f"image shard {path} is not a readable uncompressed tar file: {e}") from e

    def by_name(self, name: str, subfolders: Sequence[str] = ()) -> bytes:
        """The image called ``name``: in each folder (under each of ``subfolders``, then directly), then in shards."""
        for folder in self.folders:
            for candidate in [os.path.join(folder, sub, name) for sub in subfolders] + [os.path.join(folder, name)]:
                if not os.path.lexists(candidate):
                    continue
                if not _inside(candidate, folder):
                    raise BadSample("image_outside_root", name[:200])
                return _read_file(candidate)
        if (member := self.members.get(name)) is not None and os.path.basename(name) == name:
            return _read_member(member)
        raise BadSample("missing_image", name[:200])

    def by_url(self, url: str) -> bytes:
        """The image downloaded from ``url`` (found through img2dataset sidecars)."""
        found = self.urls.get(url)
        if found is None:
            raise BadSample("missing_image", url[:200])
        return _read_member(found) if isinstance(found, Member) else _read_file(found)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _sidecar_url(source: str, data: bytes) -> str | None:
    """The ``url`` of an img2dataset sidecar; ``None`` for anything else (broken JSON included)."""
    try:
        meta = loads_json(data, source)
    except ValueError:
        return None
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) and url else None


def _read_file(path: str) -> bytes:
    try:
        if os.path.getsize(path) > MAX_IMAGE_BYTES:
            raise BadSample("image_too_large", path)
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BadSample("missing_image", str(e)[:200]) from e


def _read_member(member: Member) -> bytes:
    if member.size > MAX_IMAGE_BYTES:
        raise BadSample("image_too_large", member.archive)
    try:
        with open(member.archive, "rb") as f:
            f.seek(member.offset)
            data = f.read(member.size)
    except OSError as e:
        raise BadSample("missing_image", str(e)[:200]) from e
    if len(data) != member.size:
        raise BadSample("undecodable_image", f"truncated member of {member.archive}")
    return data
