"""cistern.scsi: the SCSI device server (SPC-4 / SBC-3) behind the transport seam in ``task``."""

from .lu import LogicalUnit
from .sense import CheckCondition, SenseKey, build_sense
from .server import DeviceServer
from .task import DataDirection, ITNexus, ScsiResult, ScsiTask, Status, TaskAttribute

__all__ = [
    "CheckCondition",
    "DataDirection",
    "DeviceServer",
    "ITNexus",
    "LogicalUnit",
    "ScsiResult",
    "ScsiTask",
    "SenseKey",
    "Status",
    "TaskAttribute",
    "build_sense",
]
