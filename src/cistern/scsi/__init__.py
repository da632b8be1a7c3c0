"""cistern.scsi"""
