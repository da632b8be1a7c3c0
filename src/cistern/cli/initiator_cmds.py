"""Initiator commands: ``discover``, ``ls``, ``inquiry``, ``capacity``, ``read``, ``write``, ``copy``,
``bench`` (libiscsi-style URLs ``iscsi://[user%secret@]host[:port]/IQN/LUN``).

CHAP credentials come from the URL or from ``LIBISCSI_CHAP_USERNAME``/``LIBISCSI_CHAP_PASSWORD``;
mutual CHAP from ``--target-chap USER%SECRET`` or ``LIBISCSI_CHAP_TARGET_USERNAME``/``..._PASSWORD``,
as libiscsi's tools take them.  :func:`register` adds the commands to the ``cistern`` group.

Every option is checked when parsed (:mod:`cistern.cli.options`); every failure is one line
(:mod:`cistern.cli.errors`), exit status 1 (2 for usage, 3 for a verify miscompare, 130 for Ctrl-C);
listings print full values when stdout is not a terminal and JSON with ``--json`` (schemas in
docs/operations.md). The copy engine and its data-safety rules are in :mod:`cistern.cli.transfer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from cistern.cli.errors import MiscompareError, Where, describe, fail
from cistern.cli.options import (
    DEPTH,
    DURATION,
    MAX_CHUNK,
    MAX_OFFSET,
    IscsiNameType,
    SizeType,
    VpdPageType,
    confirm_or_refuse,
    json_option,
    verbose_option,
    verbosity,
    yes_option,
)
from cistern.cli.output import EXIT_INTERRUPTED, print_json, print_table, setup_logging_from
from cistern.cli.transfer import FileEnd, LunEnd, Progress, TransferError, compare, transfer
from cistern.config.sizes import human_size
from cistern.initiator import ChapSecret, IscsiSession, IscsiUrl, connect, discover, parse_url
from cistern.initiator.cdb import read as read_cdb
from cistern.initiator.cdb import write as write_cdb
from cistern.initiator.params import DEFAULT_INITIATOR_NAME, TlsConfig
from cistern.initiator.scsi_data import InquiryData, VpdPage
from cistern.initiator.url import UrlError, is_url, parse_portal
from cistern.initiator.vpd import VPD_NAMES, vpd_fields

T = TypeVar("T")
log = logging.getLogger(__name__)

URL_HELP = """\b
URL: iscsi://[USER%SECRET@]HOST[:PORT]/TARGET-IQN/LUN  (libiscsi syntax; port 3260 by default)
\b
CHAP without secrets in argv: LIBISCSI_CHAP_USERNAME / LIBISCSI_CHAP_PASSWORD (initiator credentials),
LIBISCSI_CHAP_TARGET_USERNAME / LIBISCSI_CHAP_TARGET_PASSWORD (mutual CHAP). Sizes take K/M/G/T (1K =
1024). Exit status: 0 done, 1 failed, 2 bad usage, 3 verify miscompare, 130 interrupted."""


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


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
            if not sep or not user:
                raise click.BadParameter("--target-chap takes USER%SECRET")
            self.mutual = ChapSecret(user, secret)
        self.digest = digest
        ctx = click.get_current_context(silent=True)
        self.verbose = verbosity(ctx)
        setup_logging_from(ctx)
        self.tls_files: dict[str, Any] = dict(ctx.meta.get("cistern.tls", {})) if ctx is not None else {}

    def tls(self, url: IscsiUrl) -> TlsConfig | None:
        """TLS settings: any --tls-* option or an iscsis:// URL means iSCSI inside TLS."""
        if not self.tls_files and not url.tls:
            return None
        files = self.tls_files
        return TlsConfig(files.get("ca"), files.get("cert"), files.get("key"), files.get("name"))

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


def _tls_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--tls-ca/--tls-cert/--tls-key/--tls-name: iSCSI inside TLS 1.3 (also implied by iscsis:// URLs)."""
    file = click.Path(exists=True, dir_okay=False, path_type=Path)
    for option, key, kind, text in (
        ("--tls-name", "name", str, "Name the target's certificate must carry (default: the target IQN)."),
        ("--tls-key", "key", file, "Our client certificate's private key (PEM)."),
        ("--tls-cert", "cert", file, "Our client certificate (PEM) for mutual TLS."),
        ("--tls-ca", "ca", file, "CA file the target's certificate must chain to (TLS; iscsis:// URLs)."),
    ):
        fn = click.option(option, type=kind, expose_value=False, callback=_tls_option(key), help=text)(fn)
    return fn


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = _tls_options(fn)
    fn = click.option(
        "-i",
        "--initiator-name",
        type=IscsiNameType(),
        default=DEFAULT_INITIATOR_NAME,
        show_default=True,
        help="Our iSCSI name (iqn./eui./naa.).",
    )(fn)
    fn = click.option(
        "--target-chap",
        metavar="USER%SECRET",
        help="Target credentials for mutual CHAP (or LIBISCSI_CHAP_TARGET_USERNAME/_PASSWORD).",
    )(fn)
    fn = click.option("--digest", is_flag=True, help="Require CRC32C header and data digests.")(fn)
    return verbose_option(fn)


def _guard(opts: Opts, coro: Coroutine[Any, Any, T], where: Where | None = None) -> T:
    """Run ``coro``; any failure becomes one line on stderr (exit 1), Ctrl-C exit 130."""
    try:
        return _run(coro)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except (click.ClickException, SystemExit):
        raise
    except Exception as exc:
        log.debug("command failed", exc_info=True)
        fail(exc, where, opts.verbose)


async def _logout(session: IscsiSession | None) -> None:
    if session is not None:
        try:
            await asyncio.wait_for(session.logout(wait=5.0), 10.0)
        except Exception:
            await session.close()


# --------------------------------------------------------------------------------------------------
# discover, ls, inquiry, capacity


def _portal_entry(text: str) -> dict[str, Any]:
    address, _, tpgt = text.rpartition(",")
    if not address:
        address, tpgt = text, ""
    return {"address": address, "tpgt": int(tpgt) if tpgt.isdigit() else None}


@click.command("discover", epilog=URL_HELP)
@click.argument("portal")
@json_option
@_common
def discover_cmd(
    portal: str, as_json: bool, initiator_name: str, target_chap: str | None, digest: bool
) -> None:
    """List the targets a portal (HOST[:PORT] or iscsi://HOST[:PORT]) offers (SendTargets=All)."""
    opts = Opts(initiator_name, target_chap, digest)
    url = _url(portal, need_lun=False)
    targets = _guard(opts, discover(url, **opts.kwargs(url)))
    if as_json:
        print_json(
            {"targets": [{"name": t.name, "portals": [_portal_entry(p) for p in t.portals]} for t in targets]}
        )
        return
    for target in targets:
        click.echo(f"{target.name}  {' '.join(target.portals)}")


def _inquiry_json(lun: int, inq: InquiryData) -> dict[str, Any]:
    return {
        "lun": lun,
        "peripheral_qualifier": inq.peripheral_qualifier,
        "device_type": inq.device_type,
        "device_type_name": inq.device_type_name,
        "vendor": inq.vendor,
        "product": inq.product,
        "revision": inq.revision,
        "removable": inq.removable,
        "version": inq.version,
    }


async def _standard_inquiry(s: IscsiSession, lun: int) -> InquiryData:
    """Standard INQUIRY; a LUN the target does not have (peripheral qualifier 3, SPC-4 6.6.2) raises."""
    inq = await s.inquiry(lun)
    assert isinstance(inq, InquiryData)
    if inq.peripheral_qualifier == 3 or (inq.peripheral_qualifier != 0 and inq.device_type == 0x1F):
        raise LookupError(f"LUN {lun} does not exist")
    return inq


async def _list_luns(opts: Opts, url: IscsiUrl) -> list[dict[str, Any]]:
    async with await opts.connect(url, nop_interval=0) as s:
        out = []
        for lun in await s.report_luns():
            inq = await s.inquiry(lun)
            assert isinstance(inq, InquiryData)
            entry = _inquiry_json(lun, inq)
            entry.update(blocks=None, block_size=None, size_bytes=None, thin_provisioned=None)
            if inq.device_type == 0 and inq.peripheral_qualifier == 0:
                cap = await s.read_capacity(lun)
                entry.update(
                    blocks=cap.blocks,
                    block_size=cap.block_size,
                    size_bytes=cap.size,
                    thin_provisioned=cap.thin_provisioned,
                )
            out.append(entry)
        return out


@click.command("ls", epilog=URL_HELP)
@click.argument("url")
@json_option
@_common
def ls_cmd(url: str, as_json: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:
    """Targets and LUNs with type, vendor and size (every target of the portal when no IQN is given)."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url, need_lun=False)

    async def body() -> list[dict[str, Any]]:
        if parsed.target:
            names = [parsed.target]
        else:
            names = [t.name for t in await discover(parsed, **opts.kwargs(parsed))]
        targets = []
        for name in names:
            luns = await _list_luns(opts, IscsiUrl(parsed.host, parsed.port, name, None, parsed.chap, parsed.tls))
            targets.append({"name": name, "portal": parsed.portal, "luns": luns})
        return targets

    targets = _guard(opts, body())
    if as_json:
        print_json({"targets": targets})
        return
    rows = []
    for t in targets:
        for lun in t["luns"]:
            size = ""
            if lun["size_bytes"] is not None:
                size = f"{human_size(lun['size_bytes'])} ({lun['blocks']} x {lun['block_size']})"
            rows.append(
                [
                    t["name"],
                    str(lun["lun"]),
                    lun["device_type_name"],
                    f"{lun['vendor']} {lun['product']}",
                    size,
                ]
            )
    print_table(("target", "LUN", "type", "vendor/product", "size"), rows)


def _print_fields(fields: dict[str, Any], indent: str = "") -> None:
    for key, value in fields.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{indent}{key}:")
            for item in value:
                parts = [f"{k}={v}" for k, v in item.items() if not isinstance(v, list)]
                lists = {k: v for k, v in item.items() if isinstance(v, list)}
                click.echo(f"{indent}  - " + "  ".join(parts))
                for k, v in lists.items():
                    click.echo(f"{indent}    {k}: {v}")
        elif isinstance(value, list):
            click.echo(f"{indent}{key}: {' '.join(str(v) for v in value)}")
        else:
            click.echo(f"{indent}{key}: {value}")


@click.command("inquiry", epilog=URL_HELP)
@click.argument("url")
@click.option(
    "--vpd",
    "vpd",
    type=VpdPageType(),
    help="VPD page: a number (0x83, 131) or a name (supported, serial, device-id, third-party-copy, "
    "block-limits, block-characteristics, lbp). Default: standard INQUIRY data.",
)
@json_option
@_common
def inquiry_cmd(
    url: str, vpd: int | None, as_json: bool, initiator_name: str, target_chap: str | None, digest: bool
) -> None:
    """Standard INQUIRY data, or a VPD page decoded into named fields."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)
    lun = parsed.lun or 0

    async def body() -> InquiryData | VpdPage:
        async with await opts.connect(parsed, nop_interval=0) as s:
            inq = await _standard_inquiry(s, lun)
            if vpd is None:
                return inq
            return await s.inquiry(lun, vpd)

    data = _guard(opts, body(), Where(lun=lun))
    if isinstance(data, InquiryData):
        if as_json:
            print_json(_inquiry_json(lun, data))
            return
        click.echo(f"type:     {data.device_type_name} (0x{data.device_type:02x})")
        click.echo(f"vendor:   {data.vendor}\nproduct:  {data.product}\nrevision: {data.revision}")
        click.echo(f"removable: {data.removable}  version: 0x{data.version:02x}")
        return
    fields = vpd_fields(data.page_code, data.payload)
    name = VPD_NAMES.get(data.page_code, "unknown page")
    if as_json:
        print_json(
            {
                "lun": lun,
                "page": data.page_code,
                "page_name": name,
                "length": len(data.payload),
                "fields": fields,
            }
        )
        return
    click.echo(f"VPD page 0x{data.page_code:02x} ({name}), {len(data.payload)} bytes")
    _print_fields(fields)


@click.command("capacity", epilog=URL_HELP)
@click.argument("url")
@json_option
@_common
def capacity_cmd(url: str, as_json: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:
    """READ CAPACITY: block count, block size, total size."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)
    lun = parsed.lun or 0

    async def body() -> Any:
        async with await opts.connect(parsed, nop_interval=0) as s:
            return await s.read_capacity(lun)

    cap = _guard(opts, body(), Where(lun=lun))
    if as_json:
        print_json(
            {
                "lun": lun,
                "blocks": cap.blocks,
                "block_size": cap.block_size,
                "size_bytes": cap.size,
                "thin_provisioned": cap.thin_provisioned,
                "lbppbe": cap.lbppbe,
            }
        )
        return
    click.echo(
        f"blocks: {cap.blocks}\nblock size: {cap.block_size}\nsize: {cap.size} ({human_size(cap.size)})"
    )
    if cap.thin_provisioned:
        click.echo("thin provisioned")


# --------------------------------------------------------------------------------------------------
# read, write, copy: pipelined transfers in CHUNK pieces, DEPTH of them in flight


def _transfer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--verify", is_flag=True, help="Read both sides back and compare (exit 3 if they differ)."
    )(fn)
    fn = click.option(
        "--depth", type=DEPTH, metavar="N", default=8, show_default=True, help="Chunks in flight (1..1024)."
    )(fn)
    fn = click.option(
        "--chunk",
        type=SizeType(512, MAX_CHUNK, 512),
        default="1M",
        show_default=True,
        help="Transfer unit in bytes (512 .. 64M, a multiple of the block size).",
    )(fn)
    fn = click.option(
        "--length", type=SizeType(1, MAX_OFFSET), help="Bytes to transfer [default: all of the source]."
    )(fn)
    fn = click.option(
        "--dest-offset",
        type=SizeType(0, MAX_OFFSET),
        default="0",
        show_default=True,
        help="Byte offset at the destination.",
    )(fn)
    return click.option(
        "--offset",
        type=SizeType(0, MAX_OFFSET),
        default="0",
        show_default=True,
        help="Byte offset at the source.",
    )(fn)


async def _lun_end(opts: Opts, url: IscsiUrl, sessions: list[IscsiSession]) -> LunEnd:
    session = await opts.connect(url)
    sessions.append(session)
    lun = url.lun or 0
    cap = await session.read_capacity(lun)
    return LunEnd(session, lun, cap.block_size, cap.blocks, f"LUN {lun}")


def _check_aligned(block: int, **values: int) -> None:
    for name, value in values.items():
        if value % block:
            raise click.UsageError(
                f"--{name.replace('_', '-')} {value} is not a multiple of the {block}-byte block size"
            )


def _check_range(end: LunEnd, offset: int, length: int, what: str) -> None:
    if offset + length > end.block * end.blocks:
        lba = max(offset // end.block, end.blocks)  # the first LBA the copy would touch past the end
        raise TransferError(
            f"LBA {lba} is beyond the end (capacity {end.blocks} blocks): {length} bytes at {what} {offset} "
            f"do not fit the {end.block * end.blocks}-byte {end.name}"
        )


class _Bar:
    """A MiB/s progress bar on a terminal (stderr); nothing otherwise."""

    def __init__(self, total: int | None, label: str) -> None:
        self.progress: Any = None
        if not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        speed = TextColumn("{task.fields[speed]}")
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True), speed,
            console=Console(stderr=True), transient=False,
        )  # fmt: skip
        self.task = self.progress.add_task(label, total=total, speed="")
        self.bytes = 0
        self.started = asyncio.get_running_loop().time()

    def advance(self, n: int) -> None:
        if self.progress is None:
            return
        self.bytes += n
        elapsed = max(asyncio.get_running_loop().time() - self.started, 1e-9)
        self.progress.update(self.task, advance=n, speed=f"{self.bytes / elapsed / (1 << 20):.1f} MiB/s")

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


async def _copy(
    src: LunEnd | FileEnd, offset: int, dst: LunEnd | FileEnd, dest_offset: int, length: int | None,
    chunk: int, depth: int, verify: bool, progress: Progress, *, sparse: bool = True, until_eof: bool = False,
) -> int:  # fmt: skip
    with _Bar(length, "copy") as bar:
        copied = await transfer(
            src, offset, dst, dest_offset, length, chunk, depth, progress,
            until_eof=until_eof, sparse=sparse, on_advance=bar.advance,
        )  # fmt: skip
    if progress.padded:
        click.echo(
            f"note: {src.name} ended inside a block: padded the last block with {progress.padded} zero bytes",
            err=True,
        )
    click.echo(f"copied {copied} bytes ({human_size(copied)}) at {progress.mib_s:.1f} MiB/s", err=True)
    if verify:
        with _Bar(copied, "verify"):
            at = await compare(src, offset, dst, dest_offset, copied, chunk, pad=until_eof)
        if at is not None:
            raise MiscompareError(f"verify failed: the data differs at byte {at} of the copy")
        click.echo("verify: OK", err=True)
    return copied


def _interrupted(progress: Progress, hint: str) -> None:
    total = f" of {progress.total}" if progress.total is not None else ""
    click.echo(
        f"interrupted: {progress.contiguous} bytes{total} copied without a gap ({progress.done} in all){hint}",
        err=True,
    )
    raise SystemExit(EXIT_INTERRUPTED)


def _transfer_guard(
    opts: Opts, coro: Coroutine[Any, Any, T], progress: Progress, where: Where, hint: str = ""
) -> T:
    try:
        return _run(coro)
    except KeyboardInterrupt:
        _interrupted(progress, hint)
        raise AssertionError("unreachable") from None
    except (click.ClickException, SystemExit):
        raise
    except Exception as exc:
        log.debug("transfer failed", exc_info=True)
        done = f" after {progress.contiguous} bytes" if progress.done else ""
        if done and not isinstance(exc, MiscompareError):
            click.echo(f"error: {describe(exc, where, opts.verbose)}{done}; the copy is incomplete", err=True)
            raise SystemExit(1) from None
        fail(exc, where, opts.verbose)


def _open_file(fn: Callable[[str], FileEnd], path: str) -> FileEnd:
    try:
        return fn(path)
    except TransferError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot open {path}: {exc.strerror}") from None


@click.command("read", epilog=URL_HELP)
@click.argument("url")
@click.argument("file")
@_transfer_options
@click.option(
    "--resume",
    is_flag=True,
    help="FILE holds the start of an earlier copy: check its tail against the LUN and copy the rest.",
)
@click.option(
    "--no-sparse",
    is_flag=True,
    help="Write zeros for unmapped or all-zero ranges instead of leaving holes in FILE.",
)
@_common
def read_cmd(url: str, file: str, offset: int, dest_offset: int, length: int | None, chunk: int, depth: int,
             verify: bool, resume: bool, no_sparse: bool, initiator_name: str, target_chap: str | None,
             digest: bool) -> None:  # fmt: skip
    """Copy a LUN (or part of it) to FILE: a regular file, a block device, or '-' for stdout.

    The rest of an existing FILE is kept: only [dest-offset, dest-offset + length) is written, and FILE
    is cut to the copied length only when the copy replaces all of it. Unmapped LUN ranges stay holes.
    """
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)
    if verify and file == "-":
        raise click.UsageError("--verify needs a FILE that can be read back; stdout cannot be")
    if resume and file == "-":
        raise click.UsageError("--resume needs a regular FILE, not stdout")
    dst = _open_file(FileEnd.open_destination, file)
    if resume and dst.kind != "file":
        dst.close()
        raise click.UsageError(f"--resume needs a regular FILE; {file} is a {dst.kind}")
    progress = Progress(length)
    where = Where(lun=parsed.lun)
    start_at = 0

    async def body() -> None:
        nonlocal start_at
        sessions: list[IscsiSession] = []
        try:
            src = await _lun_end(opts, parsed, sessions)
            where.capacity_blocks = src.blocks
            n = length if length is not None else src.block * src.blocks - offset
            _check_aligned(src.block, offset=offset, length=n, chunk=chunk)
            if n <= 0:
                raise TransferError(f"--offset {offset} is at or beyond the end of the {src.size}-byte LUN")
            _check_range(src, offset, n, "offset")
            if dst.size is not None and dest_offset + n > dst.size:
                raise TransferError(
                    f"{file} is a {dst.size}-byte {dst.kind}: {n} bytes at --dest-offset {dest_offset} do not fit"
                )
            progress.total = n
            if resume:
                start_at = await _resume_point(src, offset, dst, dest_offset, n, chunk, depth)
                progress.contiguous = progress.done = start_at
                click.echo(f"resuming after {start_at} bytes already in {file}", err=True)
            await _copy(src, offset + start_at, dst, dest_offset + start_at, n - start_at, chunk, depth, verify,
                        _Shifted(progress, start_at), sparse=not no_sparse)  # fmt: skip
            _final_length(dst, dest_offset, n)
        except BaseException:
            _cut_after_failure(dst, dest_offset, progress)
            raise
        finally:
            for s in sessions:
                await _logout(s)

    ok = False
    try:
        _transfer_guard(opts, body(), progress, where, f"; continue with: cistern read --resume ... {file}")
        ok = True
    finally:
        dst.close()
        if not ok and dst.created and not progress.done:
            with contextlib.suppress(OSError):
                os.unlink(file)  # no empty file left behind by a read that copied nothing


class _Shifted(Progress):
    """A view of ``base`` for a copy that starts ``shift`` bytes into it (after a resume)."""

    def __init__(self, base: Progress, shift: int) -> None:
        super().__init__(base.total)
        self.base, self.shift = base, shift

    def finish(self, at: int, n: int) -> None:
        self.base.finish(at + self.shift, n)
        super().finish(at, n)


async def _resume_point(src: LunEnd, offset: int, dst: FileEnd, dest_offset: int, n: int, chunk: int,
                        depth: int) -> int:  # fmt: skip
    """Where a resumed read continues: what FILE holds, less a margin re-copied in case the earlier run
    was killed with writes in flight, after checking the chunk before it against the LUN."""
    have = max(0, min(dst.old_size - dest_offset, n))
    have -= have % src.block
    margin = max(32 << 20, depth * chunk)
    start = max(0, have - margin)
    start -= start % src.block
    check = min(chunk, start)
    if check:
        differs = await compare(src, offset + start - check, dst, dest_offset + start - check, check, chunk)
        if differs is not None:
            raise TransferError(
                f"cannot resume: {dst.name} differs from the LUN at byte {start - check + differs}; "
                "it holds another copy (start again without --resume)"
            )
    return start


def _final_length(dst: FileEnd, dest_offset: int, n: int) -> None:
    """Regular files end exactly where the copy ends when it replaced them, never shorter otherwise."""
    if dst.kind != "file":
        return
    end = dest_offset + n
    if (dest_offset == 0 and end >= dst.old_size) or end > os.fstat(dst.fd).st_size:
        os.ftruncate(dst.fd, end)


def _cut_after_failure(dst: FileEnd, dest_offset: int, progress: Progress) -> None:
    """After a failed or interrupted read, drop what was written past the gap-free part (beyond the old
    end only), so FILE's length tells ``--resume`` where to go on."""
    if dst.kind != "file" or dst.fd < 0:
        return
    keep = max(dst.old_size, dest_offset + progress.contiguous)
    try:
        if os.fstat(dst.fd).st_size > keep:
            os.ftruncate(dst.fd, keep)
    except OSError:
        pass


@click.command("write", epilog=URL_HELP)
@click.argument("file")
@click.argument("url")
@_transfer_options
@_common
def write_cmd(file: str, url: str, offset: int, dest_offset: int, length: int | None, chunk: int, depth: int,
              verify: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """Copy FILE (a regular file, a block device, or '-' for stdin) onto a LUN.

    All of FILE (from --offset) is written, or --length bytes; input that does not fit the LUN, or that
    ends before --length, is an error. A stream ending inside a block is padded with zeros.
    """
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)
    src = _open_file(FileEnd.open_source, file)
    if verify and src.stream:
        src.close()
        raise click.UsageError(f"--verify needs a FILE that can be read twice; {src.name} is a stream")
    progress = Progress(length)
    where = Where(lun=parsed.lun)

    async def body() -> None:
        sessions: list[IscsiSession] = []
        try:
            dst = await _lun_end(opts, parsed, sessions)
            where.capacity_blocks = dst.blocks
            _check_aligned(dst.block, dest_offset=dest_offset, chunk=chunk)
            n: int | None
            if length is not None:
                _check_aligned(dst.block, length=length)
                n, until_eof = length, False
            elif src.size is not None:
                available = src.size - offset
                if available <= 0:
                    raise TransferError(
                        f"{src.name} has no bytes after --offset {offset} (it is {src.size} bytes)"
                    )
                n, until_eof = available + (-available % dst.block), True
            else:
                n, until_eof = None, True
            if n is not None:
                _check_range(dst, dest_offset, n, "dest-offset")
                progress.total = n
            if src.stream and offset:
                await src.skip(offset)
            copied = await _copy(
                src, offset, dst, dest_offset, n, chunk, depth, verify, progress, until_eof=until_eof
            )
            if copied == 0:
                raise TransferError(f"{src.name} was empty: nothing was written")
        finally:
            for s in sessions:
                await _logout(s)

    try:
        _transfer_guard(opts, body(), progress, where)
    finally:
        src.close()


@click.command("copy", epilog=URL_HELP)
@click.argument("source")
@click.argument("destination")
@_transfer_options
@_common
def copy_cmd(source: str, destination: str, offset: int, dest_offset: int, length: int | None, chunk: int,
             depth: int, verify: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """Copy between two LUNs (two sessions, possibly two targets)."""
    opts = Opts(initiator_name, target_chap, digest)
    src_url, dst_url = _url(source), _url(destination)
    progress = Progress(length)
    where = Where(lun=dst_url.lun)

    async def body() -> None:
        sessions: list[IscsiSession] = []
        try:
            src = await _lun_end(opts, src_url, sessions)
            dst = await _lun_end(opts, dst_url, sessions)
            block = max(src.block, dst.block)
            n = length if length is not None else src.block * src.blocks - offset
            _check_aligned(block, offset=offset, dest_offset=dest_offset, length=n, chunk=chunk)
            if n <= 0:
                raise TransferError(f"--offset {offset} is at or beyond the end of the source LUN")
            _check_range(src, offset, n, "offset")
            _check_range(dst, dest_offset, n, "dest-offset")
            progress.total = n
            await _copy(src, offset, dst, dest_offset, n, chunk, depth, verify, progress)
        finally:
            for s in sessions:
                await _logout(s)

    _transfer_guard(opts, body(), progress, where)


# --------------------------------------------------------------------------------------------------
# bench


async def bench(
    session: IscsiSession, lun: int, block_size: int, depth: int, read_percent: int, duration: float,
    span: int | None = None, seed: int = 1,
) -> dict[str, float]:  # fmt: skip
    """Random I/O of ``block_size`` bytes at ``depth`` for ``duration`` s; returns ops, seconds, IOPS
    and MiB/s. Raises ValueError when the block size or LUN size does not allow one I/O."""
    cap = await session.read_capacity(lun)
    if block_size % cap.block_size:
        raise ValueError(
            f"block size {block_size} is not a multiple of the LUN's {cap.block_size}-byte blocks"
        )
    blocks = block_size // cap.block_size
    slots = (min(span or cap.size, cap.size)) // block_size
    if slots < 1:
        raise ValueError("the LUN (or --span) is smaller than one I/O")
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
    async with asyncio.TaskGroup() as group:
        for _ in range(depth):
            group.create_task(worker())
    elapsed = max(loop.time() - start, 1e-9)
    return {
        "ops": ops,
        "seconds": elapsed,
        "iops": ops / elapsed,
        "mib_s": ops * block_size / elapsed / (1 << 20),
    }


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@click.command("bench", epilog=URL_HELP)
@click.argument("url")
@click.option(
    "-b",
    "--block-size",
    type=SizeType(512, 16 << 20, 512),
    default="4K",
    show_default=True,
    help="Bytes per I/O (512 .. 16M, a multiple of 512).",
)
@click.option(
    "-d",
    "--depth",
    type=DEPTH,
    metavar="N",
    default=32,
    show_default=True,
    help="Commands in flight (1..1024).",
)
@click.option(
    "-r",
    "--read-percent",
    metavar="PERCENT",
    default=100,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Share of reads in percent; below 100 WRITES random data over the LUN (needs --yes).",
)
@click.option(
    "-t",
    "--duration",
    type=DURATION,
    metavar="SECONDS",
    default=10.0,
    show_default=True,
    help="Seconds to run (0 < t <= 86400).",
)
@click.option(
    "--span", type=SizeType(512), help="Restrict I/O to the first SPAN bytes [default: the whole LUN]."
)
@yes_option
@json_option
@_common
def bench_cmd(url: str, block_size: int, depth: int, read_percent: int, duration: float, span: int | None,
              yes: bool, as_json: bool, initiator_name: str, target_chap: str | None, digest: bool) -> None:  # fmt: skip
    """IOPS and MiB/s of random I/O at a block size, depth and read/write mix."""
    opts = Opts(initiator_name, target_chap, digest)
    parsed = _url(url)
    if read_percent < 100:
        confirm_or_refuse(f"bench -r {read_percent} overwrites data on {parsed} with random bytes.", yes)

    async def body() -> dict[str, float]:
        async with await opts.connect(parsed) as s:
            try:
                return await bench(s, parsed.lun or 0, block_size, depth, read_percent, duration, span)
            except BaseExceptionGroup as group:
                raise _first_error(group) from None

    r = _guard(opts, body(), Where(lun=parsed.lun))
    if as_json:
        print_json(
            {
                "block_size": block_size,
                "depth": depth,
                "read_percent": read_percent,
                "duration_s": duration,
                "ops": int(r["ops"]),
                "seconds": r["seconds"],
                "iops": r["iops"],
                "mib_s": r["mib_s"],
            }
        )
        return
    click.echo(
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
