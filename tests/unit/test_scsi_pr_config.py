"""Where APTPL state lives, from the LUN config (``pr_state`` / ``persist_reservations``)."""

from __future__ import annotations

from pathlib import Path

from cistern.config.lun import LunConfig


def test_default_state_file_next_to_backing_file(tmp_path: Path) -> None:
    cfg = LunConfig(lun=0, backend="file", path=tmp_path / "d.img", size=1 << 20)
    assert cfg.pr_state_path() == f"{tmp_path / 'd.img'}.pr.json"


def test_memory_lun_persists_only_when_configured(tmp_path: Path) -> None:
    assert LunConfig(lun=0, backend="memory", size=1 << 20).pr_state_path() is None
    cfg = LunConfig(lun=0, backend="memory", size=1 << 20, pr_state=tmp_path / "m.pr.json")
    assert cfg.pr_state_path() == str(tmp_path / "m.pr.json")


def test_persistence_can_be_turned_off(tmp_path: Path) -> None:
    cfg = LunConfig(lun=0, backend="file", path=tmp_path / "d.img", size=1 << 20, persist_reservations=False)
    assert cfg.pr_state_path() is None
