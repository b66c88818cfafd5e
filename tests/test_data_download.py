"""Checksummed downloads (served from file:// URLs), extraction markers and the download lock."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from mchad.data.download import RemoteFile, extract, extraction_marker, fetch
from mchad.errors import ConfigError
from mchad.files import file_lock

PAYLOAD = b"0123456789" * 1000


def remote_for(path: Path, **overrides) -> RemoteFile:
    fields = {
        "url": path.as_uri(),
        "filename": "payload.bin",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "size": path.stat().st_size,
    }
    return RemoteFile(**{**fields, **overrides})


@pytest.fixture
def served(tmp_path: Path) -> Path:
    source = tmp_path / "server" / "payload.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    return source


def test_fetch_downloads_and_verifies(served: Path, tmp_path: Path) -> None:
    dest = fetch(remote_for(served), tmp_path / "data")
    assert dest == tmp_path / "data" / "payload.bin"
    assert dest.read_bytes() == PAYLOAD
    assert not list(dest.parent.glob("*.part")), "no temporary file may be left behind"


def test_fetch_accepts_md5(served: Path, tmp_path: Path) -> None:
    remote = RemoteFile(served.as_uri(), "payload.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    assert fetch(remote, tmp_path / "data").read_bytes() == PAYLOAD


def test_verified_file_is_not_downloaded_again(served: Path, tmp_path: Path, monkeypatch) -> None:
    remote = remote_for(served)
    fetch(remote, tmp_path / "data")

    def no_network(*args, **kwargs):
        raise AssertionError("a verified file must not be downloaded again")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert fetch(remote, tmp_path / "data").read_bytes() == PAYLOAD


def test_killed_download_leaves_no_part_file_behind_the_next_one(served: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    killed = data / ".payload.bin.k1ll3d.part"
    killed.write_bytes(PAYLOAD[:500])
    other = data / ".other.bin.x.part"
    other.write_bytes(b"another file's download")
    assert fetch(remote_for(served), data).read_bytes() == PAYLOAD
    assert not killed.exists() and other.exists()


def test_corrupted_download_names_expected_and_actual_checksum(served: Path, tmp_path: Path) -> None:
    expected = "0" * 64
    with pytest.raises(ConfigError) as error:
        fetch(remote_for(served, sha256=expected, size=None), tmp_path / "data")
    message = str(error.value)
    assert expected in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert served.as_uri() in message and "\n" not in message
    assert not (tmp_path / "data" / "payload.bin").exists()
    assert not list((tmp_path / "data").glob("*.part"))


def test_wrong_size_is_reported(served: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size 10000 bytes, expected 10001"):
        fetch(remote_for(served, size=10001), tmp_path / "data")


def test_corrupted_existing_file_names_file_checksums_and_fix(served: Path, tmp_path: Path) -> None:
    remote = remote_for(served, size=None)
    existing = tmp_path / "data" / "payload.bin"
    existing.parent.mkdir()
    existing.write_bytes(b"garbage")
    with pytest.raises(ConfigError) as error:
        fetch(remote, tmp_path / "data")
    message = str(error.value)
    assert str(existing) in message and "delete it" in message
    assert remote.checksum in message and hashlib.sha256(b"garbage").hexdigest() in message


def test_unreachable_url_names_url_and_where_to_put_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "payload.bin"
    remote = RemoteFile(missing.as_uri(), "payload.bin", md5="0" * 32)
    with pytest.raises(ConfigError) as error:
        fetch(remote, tmp_path / "data")
    message = str(error.value)
    assert missing.as_uri() in message and str(tmp_path / "data" / "payload.bin") in message
    assert "\n" not in message
    assert not list((tmp_path / "data").glob("*.part"))


def test_missing_file_without_download_names_path_and_both_fixes(served: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        fetch(remote_for(served), tmp_path / "data", download=False)
    message = str(error.value)
    assert str(tmp_path / "data" / "payload.bin") in message
    assert "download=true" in message and "root" in message


def _count_and_fetch(remote: RemoteFile, dest_dir: Path, log: Path) -> None:
    real_urlopen = urllib.request.urlopen

    def slow_counting_urlopen(*args, **kwargs):
        with open(log, "a") as f:
            f.write("download\n")
        time.sleep(0.5)  # keep the first download going while the other process arrives
        return real_urlopen(*args, **kwargs)

    urllib.request.urlopen = slow_counting_urlopen
    assert fetch(remote, dest_dir).read_bytes() == PAYLOAD


def test_parallel_fetches_download_once(served: Path, tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_count_and_fetch, args=(remote_for(served), tmp_path / "data", log)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text().count("download") == 1


def _write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extract_tar_writes_marker_last_and_runs_once(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    _write_tar(archive, {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    dest = extract(archive, tmp_path / "out")
    assert (dest / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert extraction_marker(archive, dest).exists()
    (dest / "top" / "x.txt").unlink()
    extract(archive, dest)
    assert not (dest / "top" / "x.txt").exists(), "a completed extraction is not repeated"


def test_half_extracted_folder_is_extracted_again(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    _write_tar(archive, {"top/x.txt": b"x", "top/y.txt": b"y"})
    dest = tmp_path / "out"
    (dest / "top").mkdir(parents=True)
    (dest / "top" / "x.txt").write_bytes(b"partial")  # an interrupted run: no marker
    extract(archive, dest)
    assert (dest / "top" / "x.txt").read_bytes() == b"x"
    assert (dest / "top" / "y.txt").read_bytes() == b"y"


def test_extract_zip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("folder/z.txt", b"z")
    assert (extract(archive, tmp_path / "out") / "folder" / "z.txt").read_bytes() == b"z"


def test_remote_file_needs_a_checksum() -> None:
    with pytest.raises(ValueError, match="checksum"):
        RemoteFile("file:///x", "x")


def test_the_lock_file_is_there_only_while_held_and_still_excludes(tmp_path: Path) -> None:
    """Four threads (each lock is its own open file, as in separate processes) add 1 to a counter 50 times each
    under the lock, which deletes its file on every release: no increment is lost, no lock file is left."""
    import threading

    counter = tmp_path / "counter"
    counter.write_text("0")
    held = []

    def add() -> None:
        for _ in range(50):
            with file_lock(counter):
                held.append((tmp_path / ".counter.lock").exists())
                value = int(counter.read_text())
                time.sleep(0)
                counter.write_text(str(value + 1))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert int(counter.read_text()) == 200
    assert held == [True] * 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]
