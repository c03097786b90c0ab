"""A tiny Windows file system: case-insensitive paths, directories, files holding bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DRIVE = re.compile(r"^[A-Za-z]:$")


class PathError(ValueError):
    pass


def normalize(path: str, cwd: str = "C:\\") -> str:
    """Absolute Windows path with backslashes, no '.'/'..', no trailing separator (except 'C:\\')."""
    text = path.strip().strip('"').replace("/", "\\")
    if text.lower().startswith("filesystem::"):
        text = text[len("filesystem::") :]
    if len(text) >= 2 and text[1] == ":":
        drive, rest = text[:2].upper(), text[2:]
        if not rest.startswith("\\"):
            rest = "\\" + rest
    elif text.startswith("\\"):
        drive, rest = cwd[:2].upper(), text
    else:
        drive, rest = cwd[:2].upper(), cwd[2:].rstrip("\\") + "\\" + text
    if not _DRIVE.match(drive):
        raise PathError(path)
    parts: list[str] = []
    for part in rest.split("\\"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return drive + "\\" + "\\".join(parts)


def parent(path: str) -> str:
    head = path.rsplit("\\", 1)[0]
    return head + "\\" if len(head) == 2 else head


@dataclass
class WindowsFileSystem:
    # lower-case path -> (path as created, content)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    # lower-case path -> path as created
    dirs: dict[str, str] = field(default_factory=dict)

    def is_dir(self, path: str) -> bool:
        return path.lower() in self.dirs

    def is_file(self, path: str) -> bool:
        return path.lower() in self.files

    def exists(self, path: str) -> bool:
        return self.is_dir(path) or self.is_file(path)

    def read(self, path: str) -> bytes | None:
        entry = self.files.get(path.lower())
        return entry[1] if entry else None

    def display(self, path: str) -> str:
        """The path with the case it was created with."""
        if path.lower() in self.files:
            return self.files[path.lower()][0]
        return self.dirs.get(path.lower(), path)

    def write(self, path: str, data: bytes) -> None:
        if not self.is_dir(parent(path)):
            raise FileNotFoundError(path)
        if self.is_dir(path):
            raise IsADirectoryError(path)
        shown = self.files[path.lower()][0] if path.lower() in self.files else path
        self.files[path.lower()] = (shown, bytes(data))

    def mkdir(self, path: str) -> None:
        """Create `path` and missing parents (New-Item -ItemType Directory does the same)."""
        chain: list[str] = []
        current = path
        while not self.is_dir(current):
            if self.is_file(current):
                raise FileExistsError(current)
            chain.append(current)
            up = parent(current)
            if up == current:
                break
            current = up
        for item in reversed(chain):
            self.dirs[item.lower()] = item

    def remove(self, path: str) -> None:
        key = path.lower()
        if key in self.files:
            del self.files[key]
            return
        if key in self.dirs:
            prefix = key.rstrip("\\") + "\\"
            for name in [n for n in self.files if n.startswith(prefix)]:
                del self.files[name]
            for name in [n for n in self.dirs if n.startswith(prefix) or n == key]:
                del self.dirs[name]
            return
        raise FileNotFoundError(path)

    def children(self, path: str) -> list[tuple[str, bool]]:
        """(path, is_dir) of the direct children of directory `path`."""
        prefix = path.lower().rstrip("\\") + "\\"
        out: list[tuple[str, bool]] = []
        for key, shown in self.dirs.items():
            if key.startswith(prefix) and "\\" not in key[len(prefix) :] and key != prefix:
                out.append((shown, True))
        for key, (shown, _) in self.files.items():
            if key.startswith(prefix) and "\\" not in key[len(prefix) :]:
                out.append((shown, False))
        return sorted(out, key=lambda item: item[0].lower())
