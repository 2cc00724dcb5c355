"""Where lightning-genae caches what it computes once (classifiers, real features, augmenters), atomically."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """$GENAE_CACHE_DIR, else ~/.cache/lightning-genae."""
    root = os.environ.get("GENAE_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lightning-genae"


def write_atomically(
    path: str | Path, write: Callable[[str], object], shared: bool = True, durable: bool = False
) -> None:
    """`write(temporary)` beside `path`, then rename it over `path`, so a reader never sees half a file;
    `shared`: readable by all (a cache); `durable`: on disk before the rename, whatever crashes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Made as any new file is, 0666 less the umask.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temporary)
        if shared:
            os.chmod(temporary, 0o644)
        if durable:
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def save_torch_atomically(
    path: str | Path, contents: object, shared: bool = True, durable: bool = False
) -> bytes:
    """`torch.save(contents)` to `path` as `write_atomically` writes, serialised in memory first: a full disk
    is the OSError it is, and the bytes (returned) do not depend on the temporary's name."""
    import torch  # here: the cache's paths and writes are read without torch elsewhere

    buffer = io.BytesIO()
    torch.save(contents, buffer)
    data = buffer.getvalue()
    write_atomically(
        path, lambda temporary: Path(temporary).write_bytes(data), shared=shared, durable=durable
    )
    return data


def write_file_atomically(path: str | Path, content: str | bytes) -> None:
    """`content` (text as UTF-8, or bytes) written to `path` as `write_atomically` writes."""
    data = content if isinstance(content, bytes) else content.encode("utf-8")
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(data))


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (a checkpoint may not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module: object, prefix: str = "") -> str:
    """The SHA-256 of `prefix` and a torch module's parameters and buffers (each one's name, dtype, shape and
    values, in name order): the same network whichever file or device it came from."""
    import torch  # here, as in save_torch_atomically

    digest = hashlib.sha256(prefix.encode())
    for name, tensor in sorted(module.state_dict().items()):  # type: ignore[attr-defined]
        value = tensor.detach().cpu().contiguous()
        digest.update(f"|{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# torch.save's legacy (pre-zip) files open with a protocol-2 pickle of its magic 0x1950A86A20F9469CFC6C.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def is_torch_file(path: str | Path) -> bool:
    """Whether `path` is in one of torch.save's formats (a zip archive, or the legacy magic-number pickle)."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(_LEGACY_TORCH_MAGIC))
    except OSError:
        return False
    return head == _LEGACY_TORCH_MAGIC or zipfile.is_zipfile(path)
