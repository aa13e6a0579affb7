"""The auditor's SDK: the audit export file format and its offline verifier."""

from clients.audit.exportfile import ExportWriter, read_export
from clients.audit.verify import VerifyReport, verify_export

__all__ = ["ExportWriter", "VerifyReport", "read_export", "verify_export"]
