"""cistern: an iSCSI storage system in Python (target, SCSI device server, storage, initiator)."""

__version__ = "0.1.0"
