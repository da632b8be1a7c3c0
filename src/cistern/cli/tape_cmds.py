"""``cistern tape``: cartridges of a tape library directory (``storage/tape``).

- ``create``: new empty cartridges (barcodes, capacity, WORM, write-protect);
- ``list``: every cartridge with where it is (slot, mailslot, drive, out), used and free bytes, files;
- ``import`` / ``export``: put an exported cartridge into a free import/export slot, or take one out
  of the library (it stays in the directory, outside the library until imported).

``import`` and ``export`` edit ``library.json`` and refuse while a server holds the library (its
flock); ``create`` and ``list`` are safe at any time.  Errors are one line, exit status 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cistern.config.sizes import human_size, parse_size
from cistern.storage.tape import (
    CartridgeError,
    Library,
    LibraryError,
    cartridge_summary,
    create_cartridge,
    default_barcodes,
    lock_library,
)
from cistern.storage.tape.cartridge import check_barcode
from cistern.storage.tape.library import KINDS, STATE_FILE, list_cartridges

LIBRARY_OPTION = click.option(
    "-l",
    "--library",
    "library",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The library directory (the changer's `library` in the config).",
)


@click.group("tape")
def tape_group() -> None:
    """Tape cartridges and libraries."""


@tape_group.command("create")
@LIBRARY_OPTION
@click.option("-s", "--size", default="1G", show_default=True, help="Capacity of each cartridge (e.g. 800G).")
@click.option("--count", type=click.IntRange(1, 4096), help="Create COUNT cartridges named PREFIX001L6...")
@click.option("--prefix", default="CIS", show_default=True, help="Barcode prefix for --count.")
@click.option("--worm", is_flag=True, help="Write once: appends only, no overwrite or erase.")
@click.option("--write-protect", is_flag=True, help="Read only.")
@click.argument("barcodes", nargs=-1)
def create(
    library: Path,
    size: str,
    count: int | None,
    prefix: str,
    worm: bool,
    write_protect: bool,
    barcodes: tuple[str, ...],
) -> None:
    """Create empty cartridges BARCODES (A-Z, 0-9, up to 32 characters) in the library directory."""
    try:
        capacity = parse_size(size)
    except ValueError as exc:
        raise click.ClickException(f"--size: {exc}") from None
    names = list(barcodes)
    if count:
        names += default_barcodes(prefix, count)
    if not names:
        raise click.ClickException("name at least one barcode, or give --count")
    try:
        for name in names:
            check_barcode(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for name in names:
        try:
            create_cartridge(str(library), name, capacity, worm=worm, write_protect=write_protect)
        except (CartridgeError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"created {name} ({human_size(capacity)}) in {library}")
    if (library / STATE_FILE).exists():
        click.echo(
            "new cartridges go to free slots when the server next starts (or use `cistern tape import`)"
        )


def _locations(library: Path) -> dict[str, str]:
    try:
        state = json.loads((library / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, str] = {}
    names = {"slot": "slot", "ie": "mailslot", "drive": "drive"}
    for kind in KINDS:
        for i, barcode in enumerate(state.get(kind, []) if isinstance(state, dict) else []):
            if isinstance(barcode, str):
                out[barcode] = f"{names[kind]} {i + 1 if kind != 'drive' else i}"
    for barcode in state.get("out", []) if isinstance(state, dict) else []:
        if isinstance(barcode, str):
            out[barcode] = "exported"
    return out


@tape_group.command("list")
@LIBRARY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(library: Path, as_json: bool) -> None:
    """Every cartridge: where it is, used and free space, files (filemarks), flags."""
    if not library.is_dir():
        raise click.ClickException(f"{library} is not a directory")
    where = _locations(library)
    rows = []
    for barcode in list_cartridges(str(library)):
        try:
            info = cartridge_summary(os.path.join(library, barcode))
        except (CartridgeError, OSError) as exc:
            raise click.ClickException(f"{barcode}: {exc}") from None
        info["location"] = where.get(barcode, "-")
        rows.append(info)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table(title=f"Cartridges in {library}")
    for col in ("Barcode", "Location", "Used", "Free", "Files", "Flags"):
        table.add_column(col)
    for r in rows:
        cap, used = int(r["capacity"]), int(r["used"])  # type: ignore[call-overload]
        flags = (
            ",".join(f for f, on in (("worm", r["worm"]), ("write-protect", r["write_protect"])) if on) or "-"
        )
        table.add_row(
            str(r["barcode"]),
            str(r["location"]),
            human_size(used),
            human_size(cap - used),
            str(r["files"]),
            flags,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)


def _open_library(library: Path) -> tuple[Library, int]:
    try:
        state = json.loads((library / STATE_FILE).read_text())
    except FileNotFoundError:
        raise click.ClickException(
            f"{library} has no {STATE_FILE}: start the server with its changer once"
        ) from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{library / STATE_FILE}: {exc}") from None
    try:
        fd = lock_library(str(library))
    except LibraryError as exc:
        raise click.ClickException(f"{exc}; stop it first") from None
    try:
        counts = {k: len(state.get(k, [])) for k in KINDS}
        return Library(str(library), slots=counts["slot"], ie=counts["ie"], drives=counts["drive"]), fd
    except LibraryError as exc:
        os.close(fd)
        raise click.ClickException(str(exc)) from None


@tape_group.command("import")
@LIBRARY_OPTION
@click.argument("barcode")
def import_(library: Path, barcode: str) -> None:
    """Put the exported cartridge BARCODE into the first free import/export slot."""
    lib, fd = _open_library(library)
    try:
        if barcode not in lib.unplaced:
            raise click.ClickException(f"{barcode} is not an exported cartridge of {library}")
        free = lib.free("ie")
        if free is None:
            raise click.ClickException("no free import/export slot")
        lib.place(barcode, "ie", free)
        click.echo(f"{barcode} is in mailslot {free + 1}")
    finally:
        os.close(fd)


@tape_group.command("export")
@LIBRARY_OPTION
@click.argument("barcode")
def export(library: Path, barcode: str) -> None:
    """Take cartridge BARCODE (in a slot or mailslot, not a drive) out of the library."""
    lib, fd = _open_library(library)
    try:
        at = lib.locate(barcode)
        if at is None:
            raise click.ClickException(f"{barcode} is not in the library")
        if at[0] == "drive":
            raise click.ClickException(f"{barcode} is in drive {at[1]}: unload it first (mtx unload)")
        lib.remove(*at)
        click.echo(f"{barcode} exported")
    finally:
        os.close(fd)


def register(group: click.Group) -> None:
    """Add ``cistern tape`` to the top-level group (cli/main.py COMMAND_MODULES)."""
    group.add_command(tape_group)
