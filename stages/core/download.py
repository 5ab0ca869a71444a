"""Fetch md5-checked files from mirrors and extract archives safely.

Downloading and checksumming are torchvision's helpers (the ones its MNIST and OxfordIIITPet datasets use).
Tar extraction is ours because torchvision's calls ``extractall`` with no filter: we refuse links, special
files and members that would land outside the target, before anything is written.
"""

from __future__ import annotations

import http.client
import tarfile
import tempfile
import urllib.error
from pathlib import Path, PurePosixPath

from stages.core.errors import UserError

# torchvision's helpers are imported where used: the offline sample never downloads, and importing torchvision
# costs seconds a stage need not spend.

OFFLINE_HINT = "to run offline on the bundled sample data, set 'source: sample' in params.yaml"


class DownloadError(UserError):
    pass


class UnsafeArchiveError(UserError):
    pass


def download_verified(mirrors: list[str], filename: str, *, md5: str, into: Path) -> Path:
    """Download ``filename`` from the first mirror that serves it with the right md5."""
    from torchvision.datasets.utils import calculate_md5, download_url

    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        path = Path(into) / filename
        try:
            download_url(url, str(into), filename=filename, md5=md5)
            return path
        except RuntimeError:  # torchvision's "File not found or corrupted." after a finished download
            got = calculate_md5(path) if path.is_file() else "nothing"
            failures.append(f"{url}: md5 mismatch (expected {md5}, got {got})")
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except http.client.HTTPException as exc:  # e.g. the connection closed mid-file
            failures.append(f"{url}: interrupted ({type(exc).__name__}: {exc})")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
        path.unlink(missing_ok=True)
    raise DownloadError(f"could not download {filename}: {'; '.join(failures)}; {OFFLINE_HINT}")


def check_tar_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    for member in members:
        name = PurePosixPath(member.name)
        if member.issym() or member.islnk():
            problem = "link member"
        elif not (member.isfile() or member.isdir()):
            problem = "special member"
        elif name.is_absolute() or ".." in name.parts:
            problem = "member outside the target:"
        else:
            continue
        raise UnsafeArchiveError(f"{archive.name}: refusing {problem} '{member.name}'; nothing was extracted")


def extract_safely(archive: Path, to: Path) -> None:
    """Extract a tar (any compression) after checking every member, or decompress a single-file archive."""
    from torchvision.datasets.utils import extract_archive

    archive, to = Path(archive), Path(to)
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                check_tar_members(archive, members)
                # The 'data' filter is the standard library's second guard against the same attacks.
                tar.extractall(to, members=members, filter="data")
        else:
            extract_archive(str(archive), str(to))
    except (tarfile.TarError, EOFError, OSError, RuntimeError) as exc:
        raise DownloadError(f"{archive.name}: corrupt or truncated archive ({exc}); {OFFLINE_HINT}") from None


def fetch_and_extract(mirrors: list[str], files: dict[str, str], to: Path) -> None:
    """Download every file (all verified before any is extracted), then extract each into ``to``.

    The archives themselves are deleted afterwards: DVC caches what was extracted.
    """
    with tempfile.TemporaryDirectory(dir=to, prefix=".downloads-") as downloads:
        paths = [download_verified(mirrors, name, md5=md5, into=Path(downloads)) for name, md5 in files.items()]
        for path in paths:
            extract_safely(path, to)
