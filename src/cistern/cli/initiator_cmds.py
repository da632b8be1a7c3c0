"""Initiator commands: ``discover``, ``ls``, ``inquiry``, ``capacity``, ``read``, ``write``, ``copy``,
``bench`` (libiscsi-style URLs ``iscsi://[user%secret@]host[:port]/IQN/LUN``).

CHAP credentials come from the URL or from ``LIBISCSI_CHAP_USERNAME``/``LIBISCSI_CHAP_PASSWORD``;
mutual CHAP from ``--target-chap USER%SECRET`` or ``LIBISCSI_CHAP_TARGET_USERNAME``/``..._PASSWORD``,
as libiscsi's tools take them.  :func:`register` adds the commands to the ``cistern`` group.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from cistern.config.sizes import human_size, parse_size
from cistern.initiator import (
    ChapSecret,
    IscsiError,
    IscsiSession,
    IscsiUrl,
    connect,
    discover,
    parse_url,
)
from cistern.initiator.cdb import read as read_cdb
from cistern.initiator.cdb import write as write_cdb
from cistern.initiator.params import DEFAULT_INITIATOR_NAME, TlsConfig
from cistern.initiator.scsi_data import InquiryData, VpdPage
from cistern.initiator.url import UrlError, is_url, parse_portal

T = TypeVar("T")
console = Console(stderr=True)
out = Console()


def _run(coro: Awaitable[T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None


def _url(text: str, *, need_lun: bool = True) -> IscsiUrl:
    try:
        url = parse_url(text) if is_url(text) else IscsiUrl(*parse_portal(text))
    except UrlError as exc:
        raise click.BadParameter(str(exc)) from None
    if need_lun and (url.target is None or url.lun is None):
        raise click.BadParameter(f"{text}: need iscsi://host[:port]/IQN/LUN")
    return url


def _env_chap(prefix: str) -> ChapSecret | None:
    user, secret = os.environ.get(f"{prefix}USERNAME"), os.environ.get(f"{prefix}PASSWORD")
    return ChapSecret(user, secret) if user and secret else None


class Opts:
    """Connection options shared by every command."""

    def __init__(self, initiator_name: str, target_chap: str | None, digest: bool) -> None:
        self.initiator_name = initiator_name
        self.mutual: ChapSecret | None = _env_chap("LIBISCSI_CHAP_TARGET_")
        if target_chap:
            user, sep, secret = target_chap.partition("%")
            if not sep:
                raise click.BadParameter("--target-chap takes USER%SECRET")
            self.mutual = ChapSecret(user, secret)
        self.digest = digest
        meta = click.get_current_context(silent=True)
        self.tls_files: dict[str, Path] = dict(meta.meta.get("cistern.tls", {})) if meta is not None else {}

    def tls(self, url: IscsiUrl) -> TlsConfig | None:
        """TLS settings: any --tls-* option or an iscsis:// URL means iSCSI inside TLS."""
        if not self.tls_files and not url.tls:
            return None
        files = self.tls_files
        return TlsConfig(files.get("ca"), files.get("cert"), files.get("key"), files.get("name"))  # type: ignore[arg-type]

    def kwargs(self, url: IscsiUrl) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "initiator_name": self.initiator_name,
            "chap": url.chap or _env_chap("LIBISCSI_CHAP_"),
            "mutual_chap": self.mutual,
            "tls": self.tls(url),
        }
        if self.digest:
            kw["header_digest"] = kw["data_digest"] = True
        return kw

    async def connect(self, url: IscsiUrl, **extra: Any) -> IscsiSession:
        return await connect(url, **self.kwargs(url), **extra)


def _tls_option(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault("cistern.tls", {})[key] = value

    return store


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    file = click.Path(exists=True, dir_okay=False, path_type=Path)
    for option, key, kind, text in (
        ("--tls-name", "name", str, "Name the target's certificate must carry (default: the target IQN)."),
        ("--tls-key", "key", file, "Our client certificate's private key (PEM)."),
        ("--tls-cert", "cert", file, "Our client certificate (PEM) for mutual TLS."),
        ("--tls-ca", "ca", file, "CA file the target's certificate must chain to (TLS; iscsis:// URLs)."),
    ):
        fn = click.option(option, type=kind, expose_value=False, callback=_tls_option(key), help=text)(fn)
    fn = click.option(
        "-i", "--initiator-name", default=DEFAULT_INITIATOR_NAME, show_default=True, help="Our iSCSI name."
    )(fn)
    fn = click.option("--target-chap", metavar="USER%SECRET", help="Target credentials for mutual CHAP.")(fn)
    return click.option("--digest", is_flag=True, help="Require CRC32C header and data digests.")(fn)


def _fail(exc: BaseException) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise SystemExit(1)


def _guard(coro: Awaitable[T]) -> T:
    try:
        return _run(coro)
    except (IscsiError, OSError, ValueError) as exc:
        _fail(exc)
        raise AssertionError("unreachable") from None


# --------------------------------------------------------------------------------------------------
# discover, ls, inquiry, capacity


@click.command("discover")
@click.argument("portal")
@_common
def discover_cmd(portal: str, initiator_name: str, target_chap: str | None, digest: bool) -> None:
    """List the targets a portal offers (SendTargets=All)."""
    opts = Opts(initiator_name, target_chap, False)
    url = _url(portal, need_lun=False)
    targets = _guard(discover(url, **opts.kwargs(url)))
    for target in targets:
        out.print(f"{target.name}  {' '.join(target.portals)}")


async def _list_luns(opts: Opts, url: IscsiUrl, table: Table) -> None:
    async with await opts.connect(url, nop_interval=0) as s:
        for lun in await s.report_luns():
            inq = await s.inquiry(lun)
            assert isinstance(inq, InquiryData)
            size = ""
            if inq.device_type == 0:
                cap = await s.read_capacity(lun)
                size = f"{human_size(cap.size)} ({cap.blocks} x {cap.block_size})"
            table.add_row(
                url.target or "", str(lun), inq.device_type_name, f"{inq.vendor} {inq.product}", size
            )


@click.command("ls")
@click.argument("url")
@_common
def ls_cmd(url: str, initiator_name: str, target_chap: str | None, digest: bool) -> None:
    """Targets and LUNs with type, vendor and size (every target of the portal when no IQN is given)."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url, need_lun=False)

    async def body() -> Table:
        table = Table("target", "LUN", "type", "vendor/product", "size")
        if parsed.target:
            names = [parsed.target]
        else:
            names = [t.name for t in await discover(parsed, **opts.kwargs(parsed))]
        for name in names:
            await _list_luns(
                opts, IscsiUrl(parsed.host, parsed.port, name, None, parsed.chap, parsed.tls), table
            )
        return table

    out.print(_guard(body()))


@click.command("inquiry")
@click.argument("url")
@click.option("--vpd", "vpd", type=lambda v: int(v, 0), help="VPD page code (0x00, 0x80, 0x83...).")
@_common
def inquiry_cmd(
    url: str, vpd: int | None, initiator_name: str, target_chap: str | None, digest: bool
) -> None:
    """Standard INQUIRY data, or a VPD page."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)

    async def body() -> InquiryData | VpdPage:
        async with await opts.connect(parsed, nop_interval=0) as s:
            return await s.inquiry(parsed.lun or 0, vpd)

    data = _guard(body())
    if isinstance(data, InquiryData):
        out.print(f"type:     {data.device_type_name} (0x{data.device_type:02x})")
        out.print(f"vendor:   {data.vendor}\nproduct:  {data.product}\nrevision: {data.revision}")
        out.print(f"removable: {data.removable}  version: 0x{data.version:02x}")
    else:
        out.print(f"VPD page 0x{data.page_code:02x}, {len(data.payload)} bytes")
        if data.supported_pages:
            out.print("supported pages: " + " ".join(f"0x{p:02x}" for p in data.supported_pages))
        if data.serial_number is not None:
            out.print(f"serial number: {data.serial_number}")
        for code_set, dtype, value in data.designators:
            shown = value.decode(errors="replace") if code_set in (2, 3) else value.hex()
            out.print(f"designator type {dtype} code set {code_set}: {shown}")
        if not (data.supported_pages or data.serial_number or data.designators):
            out.print(data.payload.hex())


@click.command("capacity")
@click.argument("url")
@_common
def capacity_cmd(url: str, initiator_name: str, target_chap: str | None, digest: bool) -> None:
    """READ CAPACITY: block count, block size, total size."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)

    async def body() -> Any:
        async with await opts.connect(parsed, nop_interval=0) as s:
            return await s.read_capacity(parsed.lun or 0)

    cap = _guard(body())
    out.print(
        f"blocks: {cap.blocks}\nblock size: {cap.block_size}\nsize: {cap.size} ({human_size(cap.size)})"
    )
    if cap.thin_provisioned:
        out.print("thin provisioned")


# --------------------------------------------------------------------------------------------------
# read, write, copy: pipelined transfers in CHUNK pieces, DEPTH of them in flight


class Endpoint:
    """One end of a transfer: a LUN (``session`` set) or a local file."""

    def __init__(self, session: IscsiSession | None, lun: int, block: int, fh: BinaryIO | None) -> None:
        self.session, self.lun, self.block, self.fh = session, lun, block, fh

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        if self.session is None:
            assert self.fh is not None
            return await asyncio.to_thread(os.pread, self.fh.fileno(), length, offset)
        return await self.session.read(self.lun, offset // self.block, length // self.block)

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        if self.session is None:
            assert self.fh is not None
            if self.fh.seekable():
                await asyncio.to_thread(os.pwrite, self.fh.fileno(), data, offset)
            else:
                self.fh.write(data)
            return
        await self.session.write(self.lun, offset // self.block, data)


async def _transfer(
    src: Endpoint,
    src_off: int,
    dst: Endpoint,
    dst_off: int,
    length: int,
    chunk: int,
    depth: int,
    verify: bool,
) -> None:
    reads: deque[tuple[int, asyncio.Task[Any]]] = deque()
    writes: set[asyncio.Task[None]] = set()
    pos = 0
    start = time.monotonic()
    columns = ("{task.description}", BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("copy", total=length)
        while pos < length or reads:
            while pos < length and len(reads) + len(writes) < depth:
                n = min(chunk, length - pos)
                reads.append((pos, asyncio.ensure_future(src.read(src_off + pos, n))))
                pos += n
            at, task = reads.popleft()
            data = await task
            w = asyncio.ensure_future(dst.write(dst_off + at, data))
            writes.add(w)
            n_done = len(data)
            w.add_done_callback(lambda _t, n=n_done: progress.advance(bar, n))  # type: ignore[misc]
            if len(writes) >= depth:
                done, _ = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                for d in done:
                    d.result()
                writes -= done
        if writes:
            await asyncio.gather(*writes)
    elapsed = max(time.monotonic() - start, 1e-9)
    console.print(f"{human_size(length)} in {elapsed:.2f} s: {length / elapsed / (1 << 20):.1f} MiB/s")
    if verify:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("verify", total=length)
            for at in range(0, length, chunk):
                n = min(chunk, length - at)
                a, b = await asyncio.gather(src.read(src_off + at, n), dst.read(dst_off + at, n))
                if bytes(a) != bytes(b):
                    raise ValueError(f"verify failed: data differs in bytes {at}..{at + n}")
                progress.advance(bar, n)
        console.print("verify: OK")


def _transfer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--verify", is_flag=True, help="Read both sides back and compare.")(fn)
    fn = click.option("--depth", default=8, show_default=True, help="Chunks in flight.")(fn)
    fn = click.option("--chunk", default="1M", show_default=True, callback=_size, help="Transfer unit.")(fn)
    fn = click.option("--length", callback=_size, help="Bytes to transfer (default: all).")(fn)
    fn = click.option("--dest-offset", default="0", callback=_size, help="Byte offset at the destination.")(
        fn
    )
    return click.option("--offset", default="0", callback=_size, help="Byte offset at the source.")(fn)


async def _lun_endpoint(opts: Opts, url: IscsiUrl) -> tuple[Endpoint, int]:
    session = await opts.connect(url)
    lun = url.lun or 0
    cap = await session.read_capacity(lun)
    return Endpoint(session, lun, cap.block_size, None), cap.size


def _check_aligned(block: int, *values: int) -> None:
    for value in values:
        if value % block:
            raise ValueError(f"{value} is not a multiple of the {block}-byte block size")


async def _close(*ends: Endpoint) -> None:
    for end in ends:
        if end.session is not None:
            await end.session.logout()


@click.command("read")
@click.argument("url")
@click.argument("file", type=click.File("wb", lazy=False))
@_transfer_options
@_common
def read_cmd(url: str, file: BinaryIO, offset: int, dest_offset: int, length: int | None, chunk: int,
             depth: int, verify: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """Copy a LUN (or part of it) to FILE ('-' for stdout)."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)

    async def body() -> None:
        src, size = await _lun_endpoint(opts, parsed)
        try:
            n = length if length is not None else size - offset
            _check_aligned(src.block, offset, n, chunk)
            await _transfer(src, offset, Endpoint(None, 0, 1, file), dest_offset, n, chunk, depth, verify)
        finally:
            await _close(src)

    _guard(body())


@click.command("write")
@click.argument("file", type=click.File("rb", lazy=False))
@click.argument("url")
@_transfer_options
@_common
def write_cmd(file: BinaryIO, url: str, offset: int, dest_offset: int, length: int | None, chunk: int,
              depth: int, verify: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """Copy FILE (or part of it) onto a LUN."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)

    async def body() -> None:
        dst, size = await _lun_endpoint(opts, parsed)
        try:
            n = length if length is not None else os.fstat(file.fileno()).st_size - offset
            _check_aligned(dst.block, dest_offset, n, chunk)
            if dest_offset + n > size:
                raise ValueError(f"{n} bytes at offset {dest_offset} do not fit the {size}-byte LUN")
            await _transfer(Endpoint(None, 0, 1, file), offset, dst, dest_offset, n, chunk, depth, verify)
        finally:
            await _close(dst)

    _guard(body())


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@_transfer_options
@_common
def copy_cmd(source: str, destination: str, offset: int, dest_offset: int, length: int | None, chunk: int,
             depth: int, verify: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """Copy between two LUNs (two sessions, possibly two targets)."""
    opts = Opts(initiator_name, target_chap, digest)
    src_url, dst_url = _url(source), _url(destination)

    async def body() -> None:
        src, size = await _lun_endpoint(opts, src_url)
        dst, dst_size = await _lun_endpoint(opts, dst_url)
        try:
            n = length if length is not None else size - offset
            _check_aligned(max(src.block, dst.block), offset, dest_offset, n, chunk)
            if dest_offset + n > dst_size:
                raise ValueError("the copy does not fit the destination LUN")
            await _transfer(src, offset, dst, dest_offset, n, chunk, depth, verify)
        finally:
            await _close(src, dst)

    _guard(body())


# --------------------------------------------------------------------------------------------------
# bench


async def bench(
    session: IscsiSession, lun: int, block_size: int, depth: int, read_percent: int, duration: float,
    span: int | None = None, seed: int = 1,
) -> dict[str, float]:  # fmt: skip
    """Random I/O of ``block_size`` at ``depth`` for ``duration`` s; returns ops, IOPS and MiB/s."""
    cap = await session.read_capacity(lun)
    if block_size % cap.block_size:
        raise ValueError(f"block size {block_size} is not a multiple of {cap.block_size}")
    blocks = block_size // cap.block_size
    slots = (min(span or cap.size, cap.size)) // block_size
    if slots < 1:
        raise ValueError("the LUN is smaller than one I/O")
    payload = os.urandom(block_size)
    rng = random.Random(seed)
    ops = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration

    async def worker() -> None:
        nonlocal ops
        while loop.time() < deadline:
            lba = rng.randrange(slots) * blocks
            if rng.randrange(100) < read_percent:
                await session.execute(lun, read_cdb(lba, blocks), read_length=block_size)
            else:
                await session.execute(lun, write_cdb(lba, blocks), data_out=payload)
            ops += 1

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(depth)))
    elapsed = loop.time() - start
    return {
        "ops": ops,
        "seconds": elapsed,
        "iops": ops / elapsed,
        "mib_s": ops * block_size / elapsed / (1 << 20),
    }


@click.command("bench")
@click.argument("url")
@click.option("-b", "--block-size", default="4K", callback=_size, show_default=True)
@click.option("-d", "--depth", default=32, show_default=True, help="Commands in flight.")
@click.option("-r", "--read-percent", default=100, show_default=True, type=click.IntRange(0, 100))
@click.option("-t", "--duration", default=10.0, show_default=True, help="Seconds.")
@click.option("--span", callback=_size, help="Restrict I/O to the first SPAN bytes.")
@_common
def bench_cmd(url: str, block_size: int, depth: int, read_percent: int, duration: float, span: int | None,
              initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """IOPS and MiB/s of random I/O at a block size, depth and read/write mix."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)
    if read_percent < 100:
        console.print("[yellow]warning:[/yellow] bench writes random data over the LUN")

    async def body() -> dict[str, float]:
        async with await opts.connect(parsed) as s:
            return await bench(s, parsed.lun or 0, block_size, depth, read_percent, duration, span)

    r = _guard(body())
    out.print(
        f"bs={human_size(block_size)} depth={depth} read={read_percent}%: "
        f"{r['iops']:.0f} IOPS, {r['mib_s']:.1f} MiB/s ({int(r['ops'])} ops in {r['seconds']:.1f} s)"
    )


def register(group: click.Group) -> None:
    """Add the initiator commands to the ``cistern`` group."""
    for command in (
        discover_cmd,
        ls_cmd,
        inquiry_cmd,
        capacity_cmd,
        read_cmd,
        write_cmd,
        copy_cmd,
        bench_cmd,
    ):
        group.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the cistern command")
