"""cistern.scsi: the SCSI device server (SPC-4 with SBC-3 disks, SSC-3 tape drives and SMC-3 medium
changers) behind the transport seam in ``task``.

Device types: every logical unit is a subclass of :class:`LogicalUnitBase` (``unit.py``: identity,
nexuses, unit attentions, reservations, mode/log/VPD page hooks) with its own :class:`CommandTable`
(``table.py``).  :class:`DeviceServer` dispatches each command through its LU's table, so adding a type
is: subclass, build a table, construct it in ``target/server.py`` (see ``unit.py`` and docs/design.md,
"Device types").  ``LogicalUnit`` is the disk.
"""

from .lu import LogicalUnit
from .sense import CheckCondition, SenseKey, build_sense
from .server import DeviceServer
from .table import CommandSpec, CommandTable
from .task import DataDirection, ITNexus, ScsiResult, ScsiTask, Status, TaskAttribute
from .unit import LogicalUnitBase

__all__ = [
    "CheckCondition",
    "CommandSpec",
    "CommandTable",
    "DataDirection",
    "DeviceServer",
    "ITNexus",
    "LogicalUnit",
    "LogicalUnitBase",
    "ScsiResult",
    "ScsiTask",
    "SenseKey",
    "Status",
    "TaskAttribute",
    "build_sense",
]
