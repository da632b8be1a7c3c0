"""cistern: an iSCSI storage system in Python (target, SCSI device server, storage, initiator)."""

from cistern import accel as _accel

__version__ = "0.1.0"

# before any hot-path module is imported: compiled (mypyc) or pure-Python path, see cistern/accel.py
_accel.activate()
