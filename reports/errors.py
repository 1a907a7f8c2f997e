"""The refusals of the reports package: each a LedgerError, so the CLI prints one line and exits 2."""

from __future__ import annotations

from ledger.errors import LedgerError


class ReportError(LedgerError):
    """Base of every error the warehouse and the audits report."""


class WarehouseError(ReportError):
    """The warehouse file cannot be opened, written or trusted."""


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse file."""


class WarehouseMismatch(WarehouseError):
    """The warehouse was synced from another ledger, or the ledger was rewritten since."""


class UnknownAudit(ReportError):
    """No audit has that name."""


class AuditParameterError(ReportError):
    """An audit parameter (time, window, period) is malformed or inconsistent."""


class RulesError(ReportError):
    """A separation-of-duties rules file is unreadable or names something the vocabulary lacks."""
