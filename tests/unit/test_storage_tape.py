"""The cartridge store (storage/tape): format, overwrite, and the load-time recovery rule after
truncated or corrupted tails and after kill -9; the library state file and lock."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from cistern.storage.tape import (
    Cartridge,
    CartridgeError,
    CorruptBlock,
    Library,
    LibraryLocked,
    cartridge_summary,
    create_cartridge,
    default_barcodes,
    ensure_cartridges,
    lock_library,
)
from cistern.storage.tape.cartridge import RECORD_SIZE


def blk(i: int, n: int = 1000) -> bytes:
    return bytes([i & 0xFF]) * n


def fill(path: str, blocks: int, fm_every: int = 0) -> Cartridge:
    cart = Cartridge(path)
    for i in range(blocks):
        cart.append_block(blk(i, 1000 + i))
        if fm_every and (i + 1) % fm_every == 0:
            cart.append_filemarks(1)
    cart.sync()
    return cart


def readall(cart: Cartridge) -> list[bytes | None]:
    out: list[bytes | None] = []
    for n in range(cart.records):
        rec = cart.record(n)
        out.append(None if rec.is_filemark else cart.read_block(rec))
    return out


@pytest.fixture
def path(tmp_path: Path) -> str:
    return create_cartridge(str(tmp_path), "CIS001L6", 64 << 20)


def test_create_layout_and_refusals(tmp_path: Path, path: str) -> None:
    assert sorted(os.listdir(path)) == ["data", "index", "meta.json", "synced"]
    with pytest.raises(CartridgeError):
        create_cartridge(str(tmp_path), "CIS001L6", 64 << 20)
    with pytest.raises(ValueError):
        create_cartridge(str(tmp_path), "bad/name", 64 << 20)
    with pytest.raises(CartridgeError):
        create_cartridge(str(tmp_path), "TINY01L6", 1000)
    (tmp_path / "junk").mkdir()
    with pytest.raises(CartridgeError):
        Cartridge(str(tmp_path / "junk"))


def test_roundtrip_filemarks_and_summary(path: str) -> None:
    cart = fill(path, 6, fm_every=3)
    assert cart.records == 8 and cart.filemarks == [3, 7]
    assert os.path.getsize(os.path.join(path, "index")) == 8 * RECORD_SIZE
    assert cart.filemarks_before(5) == 1 and cart.filemarks_before(8) == 2
    cart.close()
    again = Cartridge(path)
    assert again.recovered == 0 and again.filemarks == [3, 7]
    assert readall(again) == [
        blk(0, 1000),
        blk(1, 1001),
        blk(2, 1002),
        None,
        blk(3, 1003),
        blk(4, 1004),
        blk(5, 1005),
        None,
    ]
    again.close()
    summary = cartridge_summary(path)
    assert (
        summary["files"] == 2
        and summary["objects"] == 8
        and summary["used"] == sum(1000 + i for i in range(6))
    )


def test_truncate_drops_the_tail(path: str) -> None:
    cart = fill(path, 6, fm_every=3)
    cart.truncate(4)
    assert cart.records == 4 and cart.filemarks == [3] and cart.data_end == 3003
    cart.append_block(b"new")
    cart.close()
    again = Cartridge(path)
    assert readall(again)[-1] == b"new" and again.records == 5
    again.close()


def test_recovery_partial_index_record(path: str) -> None:
    fill(path, 5).close()
    with open(os.path.join(path, "index"), "ab") as f:
        f.write(b"\x01" * 17)  # a torn record
    cart = Cartridge(path)
    assert cart.records == 5 and cart.recovered == 0
    assert os.path.getsize(os.path.join(path, "index")) == 5 * RECORD_SIZE
    cart.close()


def test_recovery_missing_data(path: str) -> None:
    fill(path, 5).close()
    data = os.path.join(path, "data")
    os.truncate(data, os.path.getsize(data) - 10)  # the last block lost its end
    cart = Cartridge(path)
    assert cart.records == 4 and cart.recovered == 1
    assert readall(cart) == [blk(i, 1000 + i) for i in range(4)]
    assert os.path.getsize(data) == cart.data_end
    cart.close()


def test_recovery_corrupted_tail_blocks(path: str) -> None:
    fill(path, 6, fm_every=3).close()  # ... 4 5 6 FM(7)
    cart = Cartridge(path)
    last_block = cart.record(6)
    cart.close()
    with open(os.path.join(path, "index"), "r+b") as f:  # drop the trailing filemark record
        f.truncate(7 * RECORD_SIZE)
    with open(os.path.join(path, "data"), "r+b") as f:  # garbage in the last block
        f.seek(last_block.offset + 5)
        f.write(b"\xde\xad")
    cart = Cartridge(path)
    assert cart.records == 6 and cart.filemarks == [3] and cart.recovered == 1
    cart.close()


def test_recovery_broken_index_record_in_the_middle(path: str) -> None:
    fill(path, 6).close()
    with open(os.path.join(path, "index"), "r+b") as f:
        f.seek(2 * RECORD_SIZE + 3)
        f.write(b"\xff")
    cart = Cartridge(path)
    assert cart.records == 2 and cart.recovered == 4
    assert readall(cart) == [blk(0, 1000), blk(1, 1001)]
    cart.close()


def test_write_protected_cartridge_is_never_modified(tmp_path: Path) -> None:
    p = create_cartridge(str(tmp_path), "WP0001L6", 64 << 20)
    fill(p, 3).close()
    meta = Path(p) / "meta.json"
    meta.write_text(meta.read_text().replace('"write_protect": false', '"write_protect": true'))
    with open(os.path.join(p, "index"), "ab") as f:
        f.write(b"\x00" * 5)
    size = os.path.getsize(os.path.join(p, "index"))
    cart = Cartridge(p)
    assert cart.write_protect and cart.records == 3
    cart.close()
    assert os.path.getsize(os.path.join(p, "index")) == size  # recovery did not write


def test_kill9_keeps_everything_synced(path: str) -> None:
    """A child appends 50 blocks and a filemark, syncs, appends 20 more and is SIGKILLed: after
    reopening, the first 50 and the filemark read back identically and the cartridge ends there (the
    20 unsynced blocks were only buffered: the sync mark drops them)."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            cart = Cartridge(path)
            for i in range(50):
                cart.append_block(blk(i, 4096 + i))
            cart.append_filemarks(1)
            cart.sync()
            for i in range(50, 70):
                cart.append_block(blk(i, 4096 + i))
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    cart = Cartridge(path)
    got = readall(cart)
    assert got == [blk(i, 4096 + i) for i in range(50)] + [None]
    assert cart.recovered == 20 and cart.synced == 51
    cart.close()
    assert os.path.getsize(os.path.join(path, "index")) == 51 * RECORD_SIZE


def test_sync_mark_rules(path: str) -> None:
    """The mark follows every sync, drops to the overwrite point at once, and a cartridge without a
    mark (or with a torn one) keeps its whole checksummed prefix."""
    mark = os.path.join(path, "synced")
    cart = Cartridge(path)
    cart.append_block(b"a")
    assert cart.synced == 0
    cart.close()
    cart = fill(path, 5)  # 6 blocks, synced
    assert cart.synced == 6
    cart.truncate(2)  # overwrite from object 2: the mark follows down before anything is appended
    assert cart.synced == 2
    cart.append_block(b"new")  # buffered, never synced
    os.close(cart._data)
    os.close(cart._index)
    os.close(cart._mark)  # a crash: no sync at close
    assert cartridge_summary(path)["objects"] == 2  # `cistern tape list` counts what a load keeps
    again = Cartridge(path)
    assert again.records == 2 and again.recovered == 1
    again.append_block(b"x" * 10)
    again.sync()
    again.close()
    with open(mark, "r+b") as f:  # a torn mark is ignored: nothing more is dropped
        f.write(b"\xff")
    again = Cartridge(path)
    assert again.records == 3 and again.recovered == 0 and again.synced == 3
    again.close()
    os.unlink(mark)  # a cartridge from before the mark: the checksummed prefix is kept
    again = Cartridge(path)
    assert again.records == 3 and os.path.exists(mark)
    again.close()


def test_library_placement_export_import_and_lock(tmp_path: Path) -> None:
    lib = str(tmp_path / "lib")
    assert ensure_cartridges(lib, default_barcodes("CIS", 3), 4 << 20) == ["CIS001L6", "CIS002L6", "CIS003L6"]
    assert ensure_cartridges(lib, default_barcodes("CIS", 3), 4 << 20) == []
    library = Library(lib, slots=2, ie=1, drives=1)
    assert library.where["slot"] == ["CIS001L6", "CIS002L6"] and library.unplaced == ["CIS003L6"]
    library.place("CIS003L6", "ie", 0)
    assert library.remove("slot", 0) == "CIS001L6"
    again = Library(lib, slots=2, ie=1, drives=1)  # an exported cartridge stays out
    assert again.where == {"slot": [None, "CIS002L6"], "ie": ["CIS003L6"], "drive": [None]}
    assert again.unplaced == ["CIS001L6"]
    fd = lock_library(lib)
    with pytest.raises(LibraryLocked):
        lock_library(lib)
    os.close(fd)
    os.close(lock_library(lib))
    bigger = Library(lib, slots=4, ie=0, drives=1)  # the ie slot vanished: its cartridge goes to a slot
    assert sorted(b for b in bigger.where["slot"] if b) == ["CIS002L6", "CIS003L6"]


def test_compressed_blocks_roundtrip_and_recover(path: str) -> None:
    from cistern.storage.tape.cartridge import KIND_BLOCK, KIND_COMPRESSED

    cart = Cartridge(path)
    text = b"tape " * 20000  # compresses well
    noise = os.urandom(5000)  # does not: stored as is
    assert cart.append_block(text, compress=True) < len(text) // 10
    assert cart.append_block(noise, compress=True) == len(noise)
    cart.append_filemarks(1)
    cart.sync()
    assert [cart.record(i).kind for i in range(3)] == [KIND_COMPRESSED, KIND_BLOCK, 2]
    assert cart.record(0).length == len(text) and cart.read_block(cart.record(0), 7) == b"tape ta"
    cart.close()
    again = Cartridge(path)
    assert again.recovered == 0 and readall(again) == [text, noise, None]
    assert cartridge_summary(path)["used"] == again.data_end < len(text)
    first = again.record(0)
    again.close()
    with open(os.path.join(path, "data"), "r+b") as f:  # corrupt the compressed stream
        f.seek(first.offset + 3)
        f.write(b"\x00\x00\x00")
    broken = Cartridge(path)
    try:
        with pytest.raises(CorruptBlock):
            broken.read_block(broken.record(0))
    finally:
        broken.close()


def test_corrupt_library_state_is_one_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cistern.storage.tape import LibraryError

    lib = tmp_path / "lib"
    ensure_cartridges(str(lib), ["GOOD01"], 4 << 20)
    (lib / "library.json").write_text("{not json")
    with pytest.raises(LibraryError, match=r"library\.json"):
        Library(str(lib), slots=2, ie=0, drives=1)
    (lib / "library.json").write_text('{"slot": "CIS"}')
    with pytest.raises(ValueError, match="slot is not a list"):
        Library(str(lib), slots=2, ie=0, drives=1)
    (lib / "library.json").write_text('{"slot": [7, "NOPE01", "GOOD01"], "origin": [1], "out": "x"}')
    with pytest.raises(LibraryError, match="out is not a list"):
        Library(str(lib), slots=2, ie=0, drives=1)
    (lib / "library.json").write_text('{"slot": [7, "NOPE01", "GOOD01"], "origin": [1]}')
    (lib / "BAD001").mkdir()
    (lib / "BAD001" / "meta.json").write_text('{"format": 1, "barcode": "BAD001", "capacity": 5}')
    library = Library(str(lib), slots=2, ie=0, drives=1)  # junk entries dropped, GOOD01 placed
    assert library.where["slot"] == ["GOOD01", None] and "BAD001" in caplog.text
